"""Session records: reading and changing sessions in the store.

Every change is a function of the current session applied with the store's
compare-and-swap, re-read and retried when another writer won, so racing
writers (requests, task events, the janitor) serialize on the record. A change
that raises the step count by one (a step event: task_projection.py) appends
its step to the session's step log in that same compare-and-swap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from services.runtime.errors import Conflict, NotFound, Unauthenticated
from services.session import state_machine
from services.session.model import Actor, EventKind, FullSession, LastEvent, Session
from services.session.share_rules import may_see
from services.session.store import SessionStore, StepEvent, Stored

Clock = Callable[[], datetime]
Change = Callable[[Session], Session]
# Told of every committed change (before, after): webhooks (webhooks.py).
ChangeObserver = Callable[[Session, Session], None]

# Writers retry a lost compare-and-swap this many times before giving up.
MAX_SWAP_ATTEMPTS = 50


def bookkeeping(session: Session) -> Session:
    """The session with a change watchers are not told about (model.EventKind)."""
    return replace(session, last_event=LastEvent(EventKind.BOOKKEEPING))


def new_step(before: Session, after: Session) -> StepEvent | None:
    """The step a change appends to the log: the one its event reports when it
    raises the step count (by one: a change reports at most one step)."""
    if after.step_count == before.step_count:
        return None
    if after.step_count != before.step_count + 1 or after.last_event.step is None:
        raise ValueError(f"session {after.id}: a change must append exactly one step")
    return after.last_event.step


def _unreachable(actor: Actor, session_id: str) -> Exception:
    if actor.share_id:
        # The share's holder had the session: it is their credential that ended.
        return Unauthenticated("this share was revoked, has expired, or its session ended")
    # Another user's session does not exist as far as they can tell.
    return NotFound(f"session {session_id} not found")


class SessionRecords:
    def __init__(
        self, store: SessionStore, clock: Clock, on_change: ChangeObserver | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        self._on_change = on_change

    async def get(self, session_id: str) -> Stored | None:
        return await self.store.get(session_id)

    async def list_all(self) -> list[Stored]:
        return await self.store.list_all()

    async def live(self) -> list[Session]:
        return [s.session for s in await self.store.list_all() if not s.session.state.terminal]

    async def get_owned(self, actor: Actor, session_id: str) -> Stored:
        stored = await self.store.get(session_id)
        if stored is None or not may_see(actor, stored.session, self.clock()):
            raise _unreachable(actor, session_id)
        return stored

    async def get_full_owned(self, actor: Actor, session_id: str) -> tuple[FullSession, int]:
        """The session with its kept steps, and its revision (as `get_owned`)."""
        found = await self.store.get_full(session_id)
        if found is None or not may_see(actor, found[0].session, self.clock()):
            raise _unreachable(actor, session_id)
        return found

    async def update(self, session_id: str, change: Change) -> Session:
        """Apply `change` atomically: re-read and retry when another writer won.
        A change that returns its input unchanged writes nothing."""
        for _ in range(MAX_SWAP_ATTEMPTS):
            stored = await self.store.get(session_id)
            if stored is None:
                raise NotFound(f"session {session_id} not found")
            changed = change(stored.session)
            if changed is stored.session:
                return changed
            changed = state_machine.with_control_version(stored.session, changed)
            step = new_step(stored.session, changed)
            if await self.store.swap(changed, stored.revision, step) is not None:
                if self._on_change is not None:
                    # Only the writer whose swap won gets here: one call per change,
                    # whichever replica made it.
                    self._on_change(stored.session, changed)
                return changed
        raise Conflict(f"session {session_id} is changing too fast; try again")

    async def delete(self, session_id: str) -> None:
        """Remove the record, whatever its revision."""
        for _ in range(MAX_SWAP_ATTEMPTS):
            stored = await self.store.get(session_id)
            if stored is None or await self.store.delete(session_id, stored.revision):
                return

    async def record_error(self, session_id: str, message: str) -> None:
        """Tell watchers something went wrong with a live session."""
        now = self.clock()

        def change(s: Session) -> Session:
            if s.state.terminal:
                return s  # ended meanwhile: its end is the last word
            return replace(
                s,
                version=s.version + 1,
                updated_at=now,
                last_event=LastEvent(EventKind.ERROR, message=message),
            )

        await self.update(session_id, change)
