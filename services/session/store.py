"""The session store port and its in-memory implementation (the default).

Every write is a compare-and-swap on the stored revision, so concurrent
changes to one session serialize: of two racing writers exactly one wins and
the other re-reads. `watch` yields every change after a given revision, in
order; it feeds WatchSession.

Step events are not in the record: each session has an append-only step log
beside it, step n at seq n (n = the record's `step_count` after the write that
appended it). A `swap` that appends a step writes the record and the step in
one atomic write (a lost compare-and-swap appends nothing), and drops the
steps older than the newest `steps_kept` (MAX_STEP_EVENTS_KEPT); `delete`
removes the log with the record. So a change rewrites a small record, not up
to MAX_STEP_EVENTS_KEPT steps (services/session/README.md, "Store layout").
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from baton.automation.v1 import automation_pb2
from services.runtime.errors import Conflict, Unavailable
from services.runtime.limits import MAX_STEP_EVENTS_KEPT
from services.session.model import FullSession, Session

StepEvent = automation_pb2.StepEvent


@dataclass(frozen=True)
class Stored:
    session: Session
    revision: int


class SessionStore(Protocol):
    async def create(self, session: Session) -> int:
        """Store a new session; its revision. Conflict when the id exists."""

    async def get(self, session_id: str) -> Stored | None: ...

    async def get_full(self, session_id: str) -> tuple[FullSession, int] | None:
        """The session with the steps its log keeps (oldest first), read together,
        and its revision."""

    async def list_all(self) -> list[Stored]: ...

    async def swap(
        self, session: Session, revision: int, step: StepEvent | None = None
    ) -> int | None:
        """Replace the session if it is still at `revision`, and append `step` (if
        given) to its log as seq `session.step_count`, both or neither; the new
        revision or None."""

    async def delete(self, session_id: str, revision: int) -> bool:
        """Remove the session and its step log if it is still at `revision`;
        whether it was removed."""

    def watch(self, session_id: str, after_revision: int) -> AsyncIterator[Stored]:
        """Every change to the session after `after_revision`, until cancelled or
        the session is deleted."""

    async def close(self) -> None: ...


# How many past changes per session the memory store keeps for late watchers.
_HISTORY = 256
# How many changes a watcher may have not yet taken before it is cut off: a slow
# watcher never holds up writers or grows memory. Cut off, its watch raises
# Unavailable; WatchSession's caller watches again and starts from the session
# as it is then (the edge does so at once: services/edge/watch_hub.py). At least
# the history, so that a late watcher's replay fits.
WATCH_BACKLOG = _HISTORY


class _Behind:
    """Put in a watcher's queue, instead of what did not fit, when it fell behind."""


_BEHIND = _Behind()
_Item = Stored | None | _Behind


class MemoryStore:
    """Single-process store: the embedded default."""

    def __init__(self, steps_kept: int = MAX_STEP_EVENTS_KEPT) -> None:
        self._steps_kept = steps_kept
        self._revision = 0
        self._latest: dict[str, Stored] = {}
        # Each session's step log, the newest `steps_kept` (appended in seq order).
        self._steps: dict[str, deque[StepEvent]] = {}
        self._history: dict[str, deque[Stored]] = {}
        # None tells a watcher that the session was deleted.
        self._watchers: dict[str, set[asyncio.Queue[_Item]]] = {}

    def _persist(self, stored: Stored, step: StepEvent | None) -> None:
        """Write a change through before it is visible (sqlite_store.py); nothing here."""

    def _erase(self, session_id: str, revision: int) -> None:
        """Write a delete through before it is visible; nothing here."""

    def _commit(self, session: Session, step: StepEvent | None = None) -> int:
        stored = Stored(session, self._revision + 1)
        # No await from the revision check to here: the compare-and-swap is atomic.
        self._persist(stored, step)
        self._revision = stored.revision
        self._latest[session.id] = stored
        if step is not None:
            log = self._steps.setdefault(session.id, deque(maxlen=self._steps_kept))
            log.append(step)
        self._history.setdefault(session.id, deque(maxlen=_HISTORY)).append(stored)
        self._notify(session.id, stored)
        return self._revision

    def _notify(self, session_id: str, item: Stored | None) -> None:
        watchers = self._watchers.get(session_id, set())
        for queue in list(watchers):
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                # Cut off: what it holds is dropped, it is told, it gets nothing more.
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(_BEHIND)
                watchers.discard(queue)

    async def create(self, session: Session) -> int:
        if session.id in self._latest:
            raise Conflict(f"session {session.id} already exists")
        return self._commit(session)

    async def get(self, session_id: str) -> Stored | None:
        return self._latest.get(session_id)

    async def get_full(self, session_id: str) -> tuple[FullSession, int] | None:
        stored = self._latest.get(session_id)
        if stored is None:
            return None
        steps = tuple(self._steps.get(session_id, ()))
        return FullSession(stored.session, steps), stored.revision

    async def list_all(self) -> list[Stored]:
        return list(self._latest.values())

    async def swap(
        self, session: Session, revision: int, step: StepEvent | None = None
    ) -> int | None:
        current = self._latest.get(session.id)
        if current is None or current.revision != revision:
            return None
        return self._commit(session, step)

    async def delete(self, session_id: str, revision: int) -> bool:
        current = self._latest.get(session_id)
        if current is None or current.revision != revision:
            return False
        self._erase(session_id, self._revision + 1)
        self._revision += 1
        del self._latest[session_id]
        self._steps.pop(session_id, None)
        self._history.pop(session_id, None)
        self._notify(session_id, None)
        return True

    async def watch(self, session_id: str, after_revision: int) -> AsyncIterator[Stored]:
        queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=WATCH_BACKLOG)
        if session_id not in self._latest:
            return  # deleted (or never stored): no change will come
        # Replay and subscribe with no await in between, so nothing slips through.
        for past in self._history.get(session_id, ()):
            if past.revision > after_revision:
                queue.put_nowait(past)
        watchers = self._watchers.setdefault(session_id, set())
        watchers.add(queue)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, _Behind):
                    raise Unavailable(
                        f"the watch of session {session_id} fell more than "
                        f"{WATCH_BACKLOG} changes behind; watch again"
                    )
                yield item
        finally:
            watchers.discard(queue)
            if not watchers:
                self._watchers.pop(session_id, None)

    async def close(self) -> None:
        self._watchers.clear()
