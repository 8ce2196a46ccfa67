"""The audit trail's port: an append-only log of who did what to which session.

Beside the session store, never in the session record (it would grow without
bound and be rewritten on every change). Each event names the acting user,
the client address the edge saw and the time; its `detail` holds
kind-specific facts and never a secret (no share token, no typed key). Events
are read back in time order from a moment on (`since`), and those older than
the retention period are dropped by the janitor (README "Audit trail").

Implementations: the in-memory twin (the embedded default without a state
dir), SQLite (a table in the session store's own file: sqlite_store.py) and
etcd (etcd_audit_log.py).
"""

from __future__ import annotations

import bisect
import enum
import json
import logging
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from services.runtime.errors import BatonError, InvalidArgument, PermissionDenied, Unavailable

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# The most events one read answers (GET /api/audit's `limit` at most).
MAX_AUDIT_EVENTS_PER_READ = 10_000
# How long events are kept by default (BATON_AUDIT_RETENTION_S): 30 days.
DEFAULT_AUDIT_RETENTION_S = 30 * 24 * 3600.0


class AuditKind(enum.Enum):
    # A control action that succeeded: detail {action, to (hand_over), reason (end)}.
    CONTROL_CHANGED = "control_changed"
    CONTROL_REQUESTED = "control_requested"
    # detail {shareId, role, ttlSeconds, label}: never the token.
    SHARE_CREATED = "share_created"
    SHARE_REVOKED = "share_revoked"
    # Reported by the edge that served the connection (RecordAudit).
    STREAM_OPENED = "stream_opened"
    # detail {inputForwarded, inputDropped}: counts of that connection's input
    # messages, never their content.
    STREAM_CLOSED = "stream_closed"
    CDP_OPENED = "cdp_opened"
    # detail {commands}: how many CDP commands the connection sent.
    CDP_CLOSED = "cdp_closed"

    @classmethod
    def edge_reported(cls) -> frozenset[AuditKind]:
        """The kinds an edge may report through RecordAudit."""
        return frozenset({cls.STREAM_OPENED, cls.STREAM_CLOSED, cls.CDP_OPENED, cls.CDP_CLOSED})


def epoch_micros(moment: datetime) -> int:
    """`moment` (timezone-aware) as whole microseconds since the epoch: the log's order."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class AuditEvent:
    at: datetime
    session_id: str
    kind: AuditKind
    user_id: str
    source_address: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The event as GET /api/audit writes it (one JSON object per line)."""
        return {
            "at": self.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "sessionId": self.session_id,
            "kind": self.kind.value,
            "userId": self.user_id,
            "sourceAddress": self.source_address,
            "detail": dict(self.detail),
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes | str) -> AuditEvent:
        raw = json.loads(data)
        return cls(
            at=datetime.fromisoformat(raw["at"]),
            session_id=raw["sessionId"],
            kind=AuditKind(raw["kind"]),
            user_id=raw["userId"],
            source_address=raw["sourceAddress"],
            detail=raw["detail"],
        )


class AuditLog(Protocol):
    async def append(self, event: AuditEvent) -> None:
        """Add `event` to the log (kept until forget_before passes its time)."""

    async def since(
        self, moment: datetime, session_id: str | None = None, limit: int = 1000
    ) -> list[AuditEvent]:
        """At most `limit` events at or after `moment`, of `session_id` only when
        given, oldest first (events of one microsecond in the order appended)."""

    async def forget_before(self, moment: datetime) -> int:
        """Drop the events before `moment`; how many were dropped."""


class MemoryAuditLog:
    """The in-memory twin: events sorted by (time, order appended)."""

    def __init__(self) -> None:
        self._keys: list[tuple[int, int]] = []
        self._events: list[AuditEvent] = []
        self._appended = 0

    async def append(self, event: AuditEvent) -> None:
        self._appended += 1
        key = (epoch_micros(event.at), self._appended)
        where = bisect.bisect(self._keys, key)
        self._keys.insert(where, key)
        self._events.insert(where, event)

    async def since(
        self, moment: datetime, session_id: str | None = None, limit: int = 1000
    ) -> list[AuditEvent]:
        start = bisect.bisect_left(self._keys, (epoch_micros(moment), 0))
        found: list[AuditEvent] = []
        for event in self._events[start:]:
            if len(found) >= limit:
                break
            if session_id is None or event.session_id == session_id:
                found.append(event)
        return found

    async def forget_before(self, moment: datetime) -> int:
        end = bisect.bisect_left(self._keys, (epoch_micros(moment), 0))
        del self._keys[:end], self._events[:end]
        return end


_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY AUTOINCREMENT,
                                  at_us INTEGER NOT NULL, session_id TEXT NOT NULL,
                                  data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at_us, seq);
"""


class SqliteAuditLog:
    """The `audit` table in the session store's SQLite file (its connection,
    opened and closed by SqliteStore)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._run(lambda: self._db.executescript(_SCHEMA))

    def _run(self, work: Callable[[], _T]) -> _T:
        try:
            return work()
        except sqlite3.Error as exc:
            raise Unavailable(f"the audit log cannot be used: {exc}") from exc

    async def append(self, event: AuditEvent) -> None:
        self._run(
            lambda: self._db.execute(
                "INSERT INTO audit (at_us, session_id, data) VALUES (?, ?, ?)",
                (epoch_micros(event.at), event.session_id, event.encode()),
            )
        )

    async def since(
        self, moment: datetime, session_id: str | None = None, limit: int = 1000
    ) -> list[AuditEvent]:
        query = "SELECT data FROM audit WHERE at_us >= ?"
        args: tuple[object, ...] = (epoch_micros(moment),)
        if session_id is not None:
            query += " AND session_id = ?"
            args += (session_id,)
        query += " ORDER BY at_us, seq LIMIT ?"
        rows = self._run(lambda: self._db.execute(query, (*args, limit)).fetchall())
        return [AuditEvent.decode(data) for (data,) in rows]

    async def forget_before(self, moment: datetime) -> int:
        cursor = self._run(
            lambda: self._db.execute("DELETE FROM audit WHERE at_us < ?", (epoch_micros(moment),))
        )
        return int(cursor.rowcount)


class AuditTrail:
    """What the session service writes to and reads from the audit log."""

    def __init__(self, log: AuditLog, clock: Callable[[], datetime]) -> None:
        self.log = log
        self._clock = clock

    async def record(
        self,
        session_id: str,
        kind: AuditKind,
        user_id: str,
        source_address: str,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append an event stamped now. Called after the action succeeded: a log
        that cannot be written is reported, and the action stands."""
        event = AuditEvent(self._clock(), session_id, kind, user_id, source_address, detail or {})
        try:
            await self.log.append(event)
        except BatonError as exc:
            logger.error(
                "session %s: audit event %s not recorded: %s", session_id, kind.value, exc.message
            )

    async def read(
        self, operator: bool, since: datetime, session_id: str | None, limit: int
    ) -> list[AuditEvent]:
        if not operator:
            raise PermissionDenied("the audit trail is for operators only")
        if not 0 <= limit <= MAX_AUDIT_EVENTS_PER_READ:
            raise InvalidArgument(f"limit must be 1 to {MAX_AUDIT_EVENTS_PER_READ}")
        return await self.log.since(since, session_id, limit or MAX_AUDIT_EVENTS_PER_READ)

    async def forget_expired(self, retention_s: float) -> int:
        """Drop the events older than `retention_s` (the janitor's job)."""
        return await self.log.forget_before(self._clock() - timedelta(seconds=retention_s))
