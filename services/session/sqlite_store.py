"""The embedded default store, kept in a SQLite file so a restart loses no session.

It is the in-memory store (same compare-and-swap, same watches) with every
change written through to `sessions.db` in the state dir before it becomes
visible; on start the file is loaded back. One session service owns a state dir
at a time (an exclusive lock). Watches resume from the latest change after a
restart, as an etcd watch does after a compaction. Each session's step log is
the `steps` table (session id, seq), written in the same SQLite transaction as
the record. SQLite in WAL mode with
synchronous=NORMAL keeps every committed change through a crash of the process
(https://www.sqlite.org/wal.html); a power loss may lose the last ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import sqlite3
from collections import deque
from pathlib import Path
from typing import IO

from services.runtime.errors import FailedPrecondition, Unavailable
from services.runtime.limits import MAX_STEP_EVENTS_KEPT
from services.session import codec
from services.session.store import _HISTORY, MemoryStore, StepEvent, Stored

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, revision INTEGER NOT NULL,
                                     data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS steps (session_id TEXT NOT NULL, seq INTEGER NOT NULL,
                                  data BLOB NOT NULL, PRIMARY KEY (session_id, seq));
CREATE TABLE IF NOT EXISTS counter (one INTEGER PRIMARY KEY CHECK (one = 1),
                                    revision INTEGER NOT NULL);
INSERT OR IGNORE INTO counter VALUES (1, 0);
"""


class SqliteStore(MemoryStore):
    def __init__(
        self, connection: sqlite3.Connection, lock: IO[str], steps_kept: int = MAX_STEP_EVENTS_KEPT
    ) -> None:
        super().__init__(steps_kept)
        self._db = connection
        self._lock = lock
        (self._revision,) = self._db.execute("SELECT revision FROM counter").fetchone()
        for session_id, data in self._db.execute(
            "SELECT session_id, data FROM steps ORDER BY session_id, seq"
        ):
            log = self._steps.setdefault(session_id, deque(maxlen=steps_kept))
            log.append(codec.decode_step(data))
        legacy: list[tuple[Stored, tuple[StepEvent, ...]]] = []
        for session_id, revision, data in self._db.execute(
            "SELECT id, revision, data FROM sessions"
        ):
            stored = Stored(codec.decode(data), revision)
            self._latest[session_id] = stored
            self._history[session_id] = deque([stored], maxlen=_HISTORY)
            if session_id not in self._steps and (steps := codec.legacy_steps(data)):
                legacy.append((stored, steps))
        for stored, steps in legacy:
            self._move_legacy_steps(stored, steps)

    def _move_legacy_steps(self, stored: Stored, steps: tuple[StepEvent, ...]) -> None:
        """A record stored before the step log kept its steps inside: they move to
        the log (the last one at seq step_count) and the record is rewritten without."""
        count = stored.session.step_count
        kept = steps[-self._steps_kept :]
        first = count - len(kept) + 1
        statements: list[tuple[str, tuple[object, ...]]] = [
            (
                "INSERT OR REPLACE INTO steps (session_id, seq, data) VALUES (?, ?, ?)",
                (stored.session.id, first + n, codec.encode_step(step)),
            )
            for n, step in enumerate(kept)
        ]
        statements.append(
            (
                "UPDATE sessions SET data = ? WHERE id = ?",
                (codec.encode(stored.session), stored.session.id),
            )
        )
        self._write(statements, revision=self._revision)
        self._steps[stored.session.id] = deque(kept, maxlen=self._steps_kept)

    @property
    def connection(self) -> sqlite3.Connection:
        """The database file's connection, shared by the audit log (audit_log.py)."""
        return self._db

    @classmethod
    def open(cls, state_dir: Path, steps_kept: int = MAX_STEP_EVENTS_KEPT) -> SqliteStore:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = (state_dir / "service.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise FailedPrecondition(
                f"another session service is running with state dir {state_dir}"
            ) from None
        try:
            connection = sqlite3.connect(state_dir / "sessions.db", isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
            store = cls(connection, lock, steps_kept)
        except (sqlite3.Error, ValueError, KeyError, Unavailable) as exc:
            lock.close()
            raise Unavailable(f"cannot read the session store {state_dir}: {exc}") from exc
        log.info("session store %s: %d sessions", state_dir, len(store._latest))
        return store

    def _write(self, statements: list[tuple[str, tuple[object, ...]]], revision: int) -> None:
        """Run `statements` and set the revision, in one transaction."""
        try:
            with contextlib.closing(self._db.cursor()) as cursor:
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    for statement, args in statements:
                        cursor.execute(statement, args)
                    cursor.execute("UPDATE counter SET revision = ?", (revision,))
                    cursor.execute("COMMIT")
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise Unavailable(f"the session store cannot write: {exc}") from exc

    def _persist(self, stored: Stored, step: StepEvent | None) -> None:
        session = stored.session
        statements: list[tuple[str, tuple[object, ...]]] = [
            (
                "INSERT OR REPLACE INTO sessions (id, revision, data) VALUES (?, ?, ?)",
                (session.id, stored.revision, codec.encode(session)),
            )
        ]
        if step is not None:
            statements += [
                (
                    "INSERT OR REPLACE INTO steps (session_id, seq, data) VALUES (?, ?, ?)",
                    (session.id, session.step_count, codec.encode_step(step)),
                ),
                (
                    "DELETE FROM steps WHERE session_id = ? AND seq <= ?",
                    (session.id, session.step_count - self._steps_kept),
                ),
            ]
        self._write(statements, revision=stored.revision)

    def _erase(self, session_id: str, revision: int) -> None:
        self._write(
            [
                ("DELETE FROM sessions WHERE id = ?", (session_id,)),
                ("DELETE FROM steps WHERE session_id = ?", (session_id,)),
            ],
            revision=revision,
        )

    async def close(self) -> None:
        await super().close()
        self._db.close()
        self._lock.close()
