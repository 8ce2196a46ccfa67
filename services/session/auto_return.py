"""Auto-return: control goes back to the agent by itself when a takeover's
conditions hold (docs/state-machine.md, "Auto-return").

The replica that granted the takeover watches it: twice a second it reads the
session and, while the same person still holds control, checks the conditions:
the page's URL (searched with the pattern) and the selector, through automation's
ProbePage, and the person's last input (the edges report it, presence.py). The
first that holds returns control through the handoff, exactly as the person's
Return Control would, with reason `auto_return` and that condition. A takeover
watched by a replica that dies is not watched again (the person returns control).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Awaitable, Callable
from datetime import datetime

from services.runtime.errors import BatonError, InvalidArgument
from services.session.model import AutoReturn, ControlState, Session
from services.session.records import SessionRecords
from services.session.workers import WorkerDirectory, placed_host

log = logging.getLogger(__name__)

POLL_S = 0.5
AUTO_RETURN = "auto_return"
URL_MATCHES = "urlMatches"
SELECTOR_APPEARS = "selectorAppears"
IDLE_SECONDS = "idleSeconds"

# Returns control for `holder` of the session, with the condition that fired.
ReturnControl = Callable[[str, str, str], Awaitable[object]]


def check_conditions(conditions: AutoReturn) -> AutoReturn:
    """The conditions, if they are well formed (the selector is checked in the page)."""
    if not math.isfinite(conditions.idle_seconds) or conditions.idle_seconds < 0:
        raise InvalidArgument("autoReturn.idleSeconds must be a number, 0 or more")
    if conditions.url_matches:
        try:
            re.compile(conditions.url_matches)
        except re.error as exc:
            raise InvalidArgument(f"autoReturn.urlMatches is not a pattern: {exc}") from None
    return conditions


def idle_fired(conditions: AutoReturn, since: datetime, now: datetime) -> bool:
    """No input since `since` (the last input, or the takeover) for long enough."""
    idle = conditions.idle_seconds
    return idle > 0 and (now - since).total_seconds() >= idle


class AutoReturns:
    def __init__(
        self, records: SessionRecords, directory: WorkerDirectory, return_control: ReturnControl
    ) -> None:
        self._records = records
        self._directory = directory
        self._return_control = return_control
        self._watches: dict[str, asyncio.Task[None]] = {}

    def watch(self, session: Session) -> None:
        """Watch the takeover the session is in, if it set conditions."""
        self.forget(session.id)
        if session.auto_return is None or session.state is not ControlState.USER_CONTROL:
            return
        self._watches[session.id] = asyncio.create_task(
            self._watch(session.id, session.controller_user_id, session.auto_return, session),
            name=f"auto-return-{session.id}",
        )

    def forget(self, session_id: str) -> None:
        task = self._watches.pop(session_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._watches.values())
        self._watches.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch(
        self, session_id: str, holder: str, conditions: AutoReturn, taken: Session
    ) -> None:
        taken_at = taken.updated_at
        try:
            while True:
                await asyncio.sleep(POLL_S)
                stored = await self._records.get(session_id)
                session = stored.session if stored else None
                if (
                    session is None
                    or session.state is not ControlState.USER_CONTROL
                    or session.controller_user_id != holder
                    or session.auto_return != conditions
                ):
                    return
                fired = await self._fired(session, conditions, taken_at)
                if fired:
                    log.info("session %s: auto-return (%s)", session_id, fired)
                    self._watches.pop(session_id, None)
                    await self._return_control(session_id, holder, fired)
                    return
        except BatonError as exc:
            log.warning("session %s: auto-return stopped: %s", session_id, exc.message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session %s: auto-return failed", session_id)

    async def _fired(self, session: Session, conditions: AutoReturn, taken_at: datetime) -> str:
        """The condition that holds now, or ""."""
        since = max(taken_at, session.last_input_at or taken_at)
        if idle_fired(conditions, since, self._records.clock()):
            return IDLE_SECONDS
        if not (conditions.url_matches or conditions.selector_appears):
            return ""
        placement = session.placement
        host = (
            placed_host(self._directory, placement.host_id, placement.host_epoch)
            if placement
            else None
        )
        if host is None:
            return ""
        try:
            url, found = await host.automation.probe_page(session.id, conditions.selector_appears)
        except BatonError as exc:
            log.info("session %s: page not probed: %s", session.id, exc.message)
            return ""
        if conditions.url_matches and re.search(conditions.url_matches, url):
            return URL_MATCHES
        return SELECTOR_APPEARS if found else ""
