"""User ids every service gives the same meaning; no account may be named so.

- `operator`: whoever holds the operator token, acting for everyone.
- `guest:<share id>`: the holder of a share's token, someone without an account
  (README, "Sharing a session"); the session service records control by this
  id and the edge signs it into the share's token.
"""

from __future__ import annotations

OPERATOR_USER_ID = "operator"
GUEST_PREFIX = "guest:"


def guest_user_id(share_id: str) -> str:
    return f"{GUEST_PREFIX}{share_id}"


def is_guest(user_id: str) -> bool:
    return user_id.startswith(GUEST_PREFIX)


def share_id_of(user_id: str) -> str:
    """The share a guest's user id names; "" for anyone else."""
    return user_id.removeprefix(GUEST_PREFIX) if is_guest(user_id) else ""
