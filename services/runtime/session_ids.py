"""What a session id looks like, checked by every door before it is used.

Ids are made by the session service (32 hex digits today); the rule leaves
room for other stores. An id outside it is refused as INVALID_ARGUMENT (HTTP
400) before any lookup or gRPC call: quoted back in an error, a 16 KB id
would exceed gRPC's metadata limit and come back as RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import re

from services.runtime.errors import InvalidArgument

SESSION_ID_MAX_LENGTH = 128
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]+")


def check_session_id(session_id: str, where: str = "session_id") -> str:
    """`session_id`, if it has the shape of one; InvalidArgument otherwise."""
    if not session_id:
        raise InvalidArgument(f"{where} is required")
    if len(session_id) > SESSION_ID_MAX_LENGTH:
        raise InvalidArgument(f"{where} is longer than {SESSION_ID_MAX_LENGTH} characters")
    if not _SESSION_ID.fullmatch(session_id):
        raise InvalidArgument(f"{where} may contain only letters, digits, '-' and '_'")
    return session_id
