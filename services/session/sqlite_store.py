"""The embedded default store, kept in a SQLite file so a restart loses no session.

It is the in-memory store (same compare-and-swap, same watches) with every
change written through to `sessions.db` in the state dir before it becomes
visible; on start the file is loaded back. One session service owns a state dir
at a time (an exclusive lock). Watches resume from the latest change after a
restart, as an etcd watch does after a compaction. SQLite in WAL mode with
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
from services.session import codec
from services.session.store import _HISTORY, MemoryStore, Stored

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, revision INTEGER NOT NULL,
                                     data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS counter (one INTEGER PRIMARY KEY CHECK (one = 1),
                                    revision INTEGER NOT NULL);
INSERT OR IGNORE INTO counter VALUES (1, 0);
"""


class SqliteStore(MemoryStore):
    def __init__(self, connection: sqlite3.Connection, lock: IO[str]) -> None:
        super().__init__()
        self._db = connection
        self._lock = lock
        (self._revision,) = self._db.execute("SELECT revision FROM counter").fetchone()
        for session_id, revision, data in self._db.execute(
            "SELECT id, revision, data FROM sessions"
        ):
            stored = Stored(codec.decode(data), revision)
            self._latest[session_id] = stored
            self._history[session_id] = deque([stored], maxlen=_HISTORY)

    @classmethod
    def open(cls, state_dir: Path) -> SqliteStore:
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
            store = cls(connection, lock)
        except (sqlite3.Error, ValueError, KeyError) as exc:
            lock.close()
            raise Unavailable(f"cannot read the session store {state_dir}: {exc}") from exc
        log.info("session store %s: %d sessions", state_dir, len(store._latest))
        return store

    def _write(self, statement: str, *args: object, revision: int) -> None:
        try:
            with contextlib.closing(self._db.cursor()) as cursor:
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    cursor.execute(statement, args)
                    cursor.execute("UPDATE counter SET revision = ?", (revision,))
                    cursor.execute("COMMIT")
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise Unavailable(f"the session store cannot write: {exc}") from exc

    def _persist(self, stored: Stored) -> None:
        self._write(
            "INSERT OR REPLACE INTO sessions (id, revision, data) VALUES (?, ?, ?)",
            stored.session.id,
            stored.revision,
            codec.encode(stored.session),
            revision=stored.revision,
        )

    def _erase(self, session_id: str, revision: int) -> None:
        self._write("DELETE FROM sessions WHERE id = ?", session_id, revision=revision)

    async def close(self) -> None:
        await super().close()
        self._db.close()
        self._lock.close()
