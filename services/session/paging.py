"""ListSessions pages: the order, the page token, and where a page ends.

Sessions are listed oldest first by (create time, id), a key that never changes,
so a token naming the last session of a page resumes after it exactly: each
session is listed once across pages even while others are created or removed.
A page ends at its page size or before its sessions pass MAX_PAGE_BYTES,
whichever comes first, so an answer never nears gRPC's 4 MiB limit.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from datetime import datetime

from baton.session.v1 import session_pb2
from services.runtime.errors import InvalidArgument
from services.runtime.limits import DEFAULT_PAGE_SIZE, MAX_PAGE_BYTES, MAX_PAGE_SIZE
from services.session.model import Session

PageKey = tuple[datetime, str]


def key_of(session: Session) -> PageKey:
    return (session.created_at, session.id)


def page_size(requested: int) -> int:
    """The page size to use: 0 is the default, more than the maximum is the maximum."""
    if requested < 0:
        raise InvalidArgument("page_size must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(key: PageKey) -> str:
    raw = json.dumps([key[0].isoformat(), key[1]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> PageKey | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        moment, session_id = json.loads(raw)
        return (datetime.fromisoformat(moment), str(session_id))
    except (binascii.Error, ValueError, TypeError):
        raise InvalidArgument("page_token is not one this service gave out") from None


def page(
    sessions: Iterable[tuple[Session, session_pb2.Session]],
    size: int,
    max_bytes: int = MAX_PAGE_BYTES,
) -> tuple[list[session_pb2.Session], str]:
    """The first page of (session, its proto), in order; and the next page's token."""
    chosen: list[session_pb2.Session] = []
    used = 0
    last: Session | None = None
    for session, message in sessions:
        cost = message.ByteSize() + 8  # the field's tag and length
        if len(chosen) >= size or (chosen and used + cost > max_bytes):
            assert last is not None
            return chosen, encode_token(key_of(last))
        chosen.append(message)
        used += cost
        last = session
    return chosen, ""
