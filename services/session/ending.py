"""Ending a session: commit its end once, then free its browser and display.

Whoever ends a session (a person, the janitor, a broken task stream, a lost
host) comes here, so the end is committed exactly once and what the session
held on its worker host is given back exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from services.runtime.errors import BatonError
from services.runtime.limits import truncate_text
from services.session import failure_reasons, state_machine
from services.session.model import Session
from services.session.records import SessionRecords
from services.session.workers import WorkerDirectory, placed_host

log = logging.getLogger(__name__)


class Ending:
    def __init__(
        self,
        records: SessionRecords,
        directory: WorkerDirectory,
        stop_task: Callable[[str], Awaitable[None]],
        forget: Sequence[Callable[[str], None]],
    ) -> None:
        self._records = records
        self._directory = directory
        # Closes the session's task stream (before its browser is closed).
        self._stop_task = stop_task
        # What the other parts keep per session and drop when it ends.
        self._forget = forget

    async def finish(self, session_id: str, reason: str, failed: bool) -> Session:
        """End the session (once) and free its browser and display."""
        now = self._records.clock()
        reason = truncate_text(reason)
        ended_here = False

        def change(s: Session) -> Session:
            nonlocal ended_here
            ended_here = not s.state.terminal
            return state_machine.finish(s, now, reason, failed) if ended_here else s

        ended = await self._records.update(session_id, change)
        if not ended_here:
            return ended
        for forget in self._forget:
            forget(session_id)
        # The StartTask stream is closed before CloseBrowser goes out, so
        # automation cannot open a browser for it after the close.
        await self._stop_task(session_id)
        await self._release(ended)
        return ended

    async def fail_host_lost(self, session_id: str) -> Session:
        log.warning("session %s: %s", session_id, failure_reasons.HOST_LOST)
        return await self.finish(session_id, failure_reasons.HOST_LOST, failed=True)

    async def _release(self, session: Session) -> None:
        placement = session.placement
        if placement is None:
            return
        host = placed_host(self._directory, placement.host_id, placement.host_epoch)
        if host is None:
            # Its slots and browsers went with the host.
            log.info(
                "session %s: host %s is gone: nothing to release", session.id, placement.host_id
            )
            return
        automation = host.automation
        for step in (automation.cancel_task, automation.close_browser):
            try:
                await step(session.id)
            except BatonError as exc:
                log.info("session %s: %s: %s", session.id, step.__name__, exc.message)
        try:
            await host.display.release_slot(placement.slot_id)
        except BatonError as exc:
            log.info("session %s: release slot: %s", session.id, exc.message)
