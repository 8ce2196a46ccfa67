"""Task runs: each placed session's StartTask stream, while it lasts.

Every event of the stream is applied to the session through the task
projection (task_projection.py). A stream that breaks fails its session, with
the reason found by asking the worker host what is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from baton.automation.v1 import automation_pb2
from services.runtime.errors import BatonError, NotFound, Unavailable
from services.session import failure_reasons
from services.session.records import SessionRecords
from services.session.task_projection import project
from services.session.workers import WorkerDirectory, WorkerHost, placed_host

log = logging.getLogger(__name__)

# Fails a session: (session id, reason).
Fail = Callable[[str, str], Awaitable[object]]


# Beyond the lease TTL: the directory's watch learns of the expiry a moment later.
HOST_LOST_MARGIN_S = 2.0
# How often a broken stream's session looks whether its host left the directory.
HOST_LOST_POLL_S = 0.2


class TaskRuns:
    def __init__(
        self,
        records: SessionRecords,
        directory: WorkerDirectory,
        fail: Fail,
        host_lost_within_s: float = 0.0,
    ) -> None:
        self._records = records
        self._directory = directory
        self._fail = fail
        # A display that does not answer may be a dead host, known as such
        # only when its registration lease ends: wait that long to say which.
        self._host_lost_within_s = host_lost_within_s
        self._runs: dict[str, asyncio.Task[None]] = {}
        # Sessions whose task stream has delivered an event: automation knows them.
        self._seen: set[str] = set()

    def start(
        self, session_id: str, host: WorkerHost, request: automation_pb2.StartTaskRequest
    ) -> None:
        self._runs[session_id] = asyncio.create_task(
            self._run(session_id, host, request), name=f"task-{session_id}"
        )

    def in_flight(self, session_id: str) -> bool:
        """Our StartTask runs but automation has not answered it yet."""
        return session_id in self._runs and session_id not in self._seen

    def starting(self) -> frozenset[str]:
        """Sessions whose StartTask automation has not answered yet."""
        return frozenset(s for s in self._runs if self.in_flight(s))

    async def stop(self, session_id: str) -> None:
        """Close the session's task stream and wait until it is closed."""
        run = self._runs.pop(session_id, None)
        if run is not None and run is not asyncio.current_task():
            run.cancel()
            await asyncio.wait([run])

    async def close(self) -> None:
        runs = list(self._runs.values())
        for run in runs:
            run.cancel()
        for run in runs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run
        self._runs.clear()

    async def _run(
        self, session_id: str, host: WorkerHost, request: automation_pb2.StartTaskRequest
    ) -> None:
        try:
            async for event in host.automation.start_task(request):
                self._seen.add(session_id)
                await self._apply(session_id, event)
        except asyncio.CancelledError:
            raise
        except BatonError as exc:
            log.warning("session %s: task stream failed: %s", session_id, exc.message)
            await self._fail(session_id, await self._why_broken(session_id))
        except Exception:
            log.exception("session %s: task stream crashed", session_id)
            await self._fail(session_id, failure_reasons.AUTOMATION_FAILED)
        finally:
            if self._runs.get(session_id) is asyncio.current_task():
                del self._runs[session_id]
            self._seen.discard(session_id)

    async def _apply(self, session_id: str, event: automation_pb2.StartTaskResponse) -> None:
        now = self._records.clock()
        with contextlib.suppress(NotFound):
            await self._records.update(session_id, lambda s: project(s, event, now))

    async def _leaves_directory(self, host_id: str, epoch: str) -> bool:
        """Whether the host (that epoch) leaves the directory within the lease."""
        deadline = asyncio.get_running_loop().time() + self._host_lost_within_s
        while placed_host(self._directory, host_id, epoch) is not None:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(HOST_LOST_POLL_S)
        return True

    async def _why_broken(self, session_id: str) -> str:
        """Ask the worker host what is gone: the host, the slot, the automation
        service or the browser."""
        stored = await self._records.get(session_id)
        placement = stored.session.placement if stored else None
        if placement is None:
            return failure_reasons.AUTOMATION_FAILED
        host = placed_host(self._directory, placement.host_id, placement.host_epoch)
        if host is None:
            return failure_reasons.HOST_LOST
        try:
            slots = {s.id: s.session_id for s in await host.display.list_slots()}
            if slots.get(placement.slot_id) != session_id:
                return failure_reasons.DISPLAY_CRASHED
        except Unavailable:
            # The host's display service does not answer: the whole host may
            # be gone (kill -9, power), which only its lease's end tells.
            if await self._leaves_directory(placement.host_id, placement.host_epoch):
                return failure_reasons.HOST_LOST
            return failure_reasons.DISPLAY_CRASHED
        except BatonError:
            return failure_reasons.DISPLAY_CRASHED
        try:
            await host.automation.list_browsers()
        except BatonError:
            return failure_reasons.AUTOMATION_CRASHED
        return failure_reasons.BROWSER_CRASHED
