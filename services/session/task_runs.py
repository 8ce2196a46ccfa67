"""Task runs: the task streams this replica follows, while they last.

A run is a session's StartTask stream, or an AttachTask stream that reads on
after the last event the session applied (a task adopted from a replica that
went away: task_adoption.py). A run holds the session's task claim
(task_owners.py) from its start to its end. Every event is applied to the
session through the task projection (task_projection.py), each seq once. A
stream that breaks fails its session, with the reason found by asking the
worker host what is gone; an AttachTask that finds no task says the task was
lost, and the session stays for the person.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from baton.automation.v1 import automation_pb2
from services.runtime.cancellation import check_cancelled, unless_cancelled
from services.runtime.errors import BatonError, NotFound, Unavailable
from services.session import failure_reasons
from services.session.records import SessionRecords
from services.session.task_owners import TaskOwners
from services.session.task_projection import project, task_lost
from services.session.workers import WorkerDirectory, WorkerHost, placed_host

log = logging.getLogger(__name__)

# A task stream that broke with its host, slot and browser all still there is
# followed again (AttachTask) this many times, after this delay times the count.
REATTACH_TRIES = 3
REATTACH_DELAY_S = 0.2

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
        owners: TaskOwners,
        fail: Fail,
        host_lost_within_s: float = 0.0,
    ) -> None:
        self._records = records
        self._directory = directory
        self._owners = owners
        self._fail = fail
        # A display that does not answer may be a dead host, known as such
        # only when its registration lease ends: wait that long to say which.
        self._host_lost_within_s = host_lost_within_s
        self._runs: dict[str, asyncio.Task[None]] = {}
        # Sessions whose task stream has delivered an event: automation knows them.
        self._seen: set[str] = set()

    async def claim(self, session_id: str) -> bool:
        """Claim the session's task for this replica (before starting or attaching)."""
        return await self._owners.claim(session_id)

    def start(
        self, session_id: str, host: WorkerHost, request: automation_pb2.StartTaskRequest
    ) -> None:
        """Start the claimed session's task and follow it."""
        self._follow(session_id, host.automation.start_task(request), attached=False)

    def attach(self, session_id: str, host: WorkerHost, after_seq: int) -> None:
        """Follow the claimed session's running task again after event `after_seq`."""
        log.info("session %s: following its task after event %d", session_id, after_seq)
        self._follow(session_id, host.automation.attach_task(session_id, after_seq), attached=True)

    def running(self, session_id: str) -> bool:
        return session_id in self._runs

    def _follow(
        self,
        session_id: str,
        events: AsyncIterator[automation_pb2.StartTaskResponse],
        attached: bool,
    ) -> None:
        self._runs[session_id] = asyncio.create_task(
            self._run(session_id, events, attached), name=f"task-{session_id}"
        )

    def in_flight(self, session_id: str) -> bool:
        """Our StartTask runs but automation has not answered it yet."""
        return session_id in self._runs and session_id not in self._seen

    def starting(self) -> frozenset[str]:
        """Sessions whose StartTask automation has not answered yet."""
        return frozenset(s for s in self._runs if self.in_flight(s))

    async def stop(self, session_id: str) -> None:
        """Close the session's task stream, wait until it is closed, release the claim."""
        run = self._runs.pop(session_id, None)
        if run is not None and run is not asyncio.current_task():
            run.cancel()
            await asyncio.wait([run])
        await self._owners.release(session_id)

    async def close(self) -> None:
        """Stop following (the tasks go on: another replica, or this one restarted,
        attaches again within automation's grace window)."""
        runs = list(self._runs.values())
        for run in runs:
            run.cancel()
        for run in runs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run
        self._runs.clear()

    async def _run(
        self,
        session_id: str,
        events: AsyncIterator[automation_pb2.StartTaskResponse],
        attached: bool,
    ) -> None:
        broken = 0
        try:
            while True:
                try:
                    async for event in events:
                        self._seen.add(session_id)
                        await self._apply(session_id, event)
                        check_cancelled()
                    return
                except BatonError as exc:
                    unless_cancelled(exc)
                    if attached and isinstance(exc, NotFound):
                        await self._task_lost(session_id, exc.message)
                        return
                    log.warning("session %s: task stream failed: %s", session_id, exc.message)
                    reason, host = await self._why_broken(session_id)
                    broken += 1
                    if host is None or broken > REATTACH_TRIES:
                        await self._fail(session_id, reason)
                        return
                # Everything is still there (a network blip, a restarted channel):
                # read on after the last event applied.
                await asyncio.sleep(REATTACH_DELAY_S * broken)
                stored = await self._records.get(session_id)
                if stored is None or stored.session.state.terminal:
                    return
                after = stored.session.task.events_applied
                log.info("session %s: following its task again after %d", session_id, after)
                events = host.automation.attach_task(session_id, after)
                attached = True
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session %s: task stream crashed", session_id)
            await self._fail(session_id, failure_reasons.AUTOMATION_FAILED)
        finally:
            if self._runs.get(session_id) is asyncio.current_task():
                del self._runs[session_id]
                # Ended (or failed) here, not stopped: the claim has done its job.
                await self._owners.release(session_id)
            self._seen.discard(session_id)

    async def _task_lost(self, session_id: str, why: str) -> None:
        """Automation knows no task of the session: it never got the StartTask, or
        it restarted. The session, and its browser if any, stay for the person."""
        log.warning("session %s: no task to follow: %s", session_id, why)
        now = self._records.clock()
        with contextlib.suppress(NotFound):
            await self._records.update(session_id, lambda s: task_lost(s, now))

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

    async def _why_broken(self, session_id: str) -> tuple[str, WorkerHost | None]:
        """Ask the worker host what is gone (the host, the slot, the automation
        service or the browser): the reason, and the host when nothing is gone."""
        stored = await self._records.get(session_id)
        placement = stored.session.placement if stored else None
        if placement is None:
            return failure_reasons.AUTOMATION_FAILED, None
        host = placed_host(self._directory, placement.host_id, placement.host_epoch)
        if host is None:
            return failure_reasons.HOST_LOST, None
        try:
            slots = {s.id: s.session_id for s in await host.display.list_slots()}
            if slots.get(placement.slot_id) != session_id:
                return failure_reasons.DISPLAY_CRASHED, None
        except Unavailable:
            # The host's display service does not answer: the whole host may
            # be gone (kill -9, power), which only its lease's end tells.
            if await self._leaves_directory(placement.host_id, placement.host_epoch):
                return failure_reasons.HOST_LOST, None
            return failure_reasons.DISPLAY_CRASHED, None
        except BatonError:
            return failure_reasons.DISPLAY_CRASHED, None
        try:
            browsers = await host.automation.list_browsers()
        except BatonError:
            return failure_reasons.AUTOMATION_CRASHED, None
        if session_id not in browsers:
            return failure_reasons.BROWSER_CRASHED, None
        return failure_reasons.AUTOMATION_FAILED, host
