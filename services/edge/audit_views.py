"""GET /api/audit: its query parsed, its events as JSON lines (README "Audit trail")."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from baton.session.v1 import session_pb2
from services.runtime.errors import InvalidArgument
from services.runtime.session_ids import check_session_id

# One answer holds at most this many events (session's MAX_AUDIT_EVENTS_PER_READ).
MAX_AUDIT_LIMIT = 10_000
NDJSON = "application/x-ndjson"
_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class AuditQuery:
    since: datetime
    session_id: str
    limit: int


def parse_audit_query(params: Mapping[str, str]) -> AuditQuery:
    """`since` (ISO 8601 with a timezone; default: the oldest kept), `sessionId`
    (optional), `limit` (1 to MAX_AUDIT_LIMIT, default MAX_AUDIT_LIMIT)."""
    unknown = set(params) - {"since", "sessionId", "limit"}
    if unknown:
        raise InvalidArgument(f"unknown query parameter {sorted(unknown)[0]!r}")
    text = params.get("since")
    since = _BEGINNING if text is None else _moment(text)
    session_id = params.get("sessionId")
    if session_id is not None:
        check_session_id(session_id, "sessionId")
    limit_text = params.get("limit", str(MAX_AUDIT_LIMIT))
    if not limit_text.isdigit() or not 1 <= int(limit_text[:9]) <= MAX_AUDIT_LIMIT:
        raise InvalidArgument(f"limit must be a whole number from 1 to {MAX_AUDIT_LIMIT}")
    return AuditQuery(max(since, _BEGINNING), session_id or "", int(limit_text))


def _moment(text: str) -> datetime:
    bad = InvalidArgument(
        "since must be an ISO 8601 time with a timezone, e.g. 2025-03-01T12:00:00Z"
    )
    if len(text) > 64:
        raise bad
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise bad
        # In UTC, or past the calendar's end (9999-12-31T23:00-05:00 is not a time).
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise bad from None


def audit_lines(events: Sequence[session_pb2.AuditEvent]) -> bytes:
    """One JSON object per event and line, oldest first."""
    lines = (
        json.dumps(
            {
                # Microseconds: an event's `at` given back as `since` finds it.
                "at": event.time.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z"),
                "sessionId": event.session_id,
                "kind": event.kind,
                "userId": event.user_id,
                "sourceAddress": event.source_address,
                "detail": json.loads(event.detail_json or "{}"),
            },
            separators=(",", ":"),
        )
        + "\n"
        for event in events
    )
    return "".join(lines).encode()
