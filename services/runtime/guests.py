"""Who a share's holder is to every service: user `guest:<share id>`.

A share opens one session to someone without an account (README, "Sharing");
the session service records control by this user id and the edge signs it
into the share's token. No account may be named so.
"""

from __future__ import annotations

GUEST_PREFIX = "guest:"


def guest_user_id(share_id: str) -> str:
    return f"{GUEST_PREFIX}{share_id}"


def is_guest(user_id: str) -> bool:
    return user_id.startswith(GUEST_PREFIX)
