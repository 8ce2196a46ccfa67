"""Task adoption: following again the tasks nobody follows.

services/session/README.md, "Following tasks across replicas". A task whose
follower went away (a replica died or stopped; this service restarted) runs on
in automation for its grace window (BATON_TASK_GRACE_S). This replica looks for
such tasks at start-up and whenever another replica's claim is released
(task_owners.py), claims each one it finds and attaches to it after the last
event its session applied (task_runs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.runtime.cancellation import check_cancelled, unless_cancelled
from services.session.model import ControlState, Session
from services.session.records import SessionRecords
from services.session.task_owners import EVERYTHING, TaskOwners
from services.session.task_runs import TaskRuns
from services.session.workers import WorkerDirectory, placed_host

log = logging.getLogger(__name__)

# The states of a placed session whose task may run (STARTING belongs to its
# launcher, which holds the claim from the first moment).
_PLACED = (ControlState.AI_CONTROL, ControlState.USER_CONTROL, ControlState.PAUSED)
# After a failed look (etcd or a host not answering), the next one comes this late.
RETRY_S = 1.0


def needs_follower(session: Session) -> bool:
    return session.state in _PLACED and session.placement is not None and session.task.status.active


class TaskAdoption:
    def __init__(
        self,
        records: SessionRecords,
        directory: WorkerDirectory,
        owners: TaskOwners,
        task_runs: TaskRuns,
    ) -> None:
        self._records = records
        self._directory = directory
        self._owners = owners
        self._task_runs = task_runs
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="task-adoption")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        await self._adopt_all_until_done()
        released = self._owners.released()
        while True:
            # Before each wait: a cancellation absorbed by the round before
            # (cancellation.py) must not leave us waiting for the next event.
            check_cancelled()
            session_id = await anext(released)
            if session_id == EVERYTHING:
                await self._adopt_all_until_done()
            else:
                try:
                    await self.adopt(session_id)
                except Exception as exc:
                    unless_cancelled(exc)
                    log.warning("task adoption: session %s: %s; looking at all", session_id, exc)
                    await asyncio.sleep(RETRY_S)
                    await self._adopt_all_until_done()

    async def _adopt_all_until_done(self) -> None:
        while True:
            check_cancelled()
            try:
                await self.adopt_all()
                return
            # Whatever went wrong (the store out of reach), look again soon.
            except Exception as exc:
                unless_cancelled(exc)
                log.warning("task adoption: looking for tasks failed (%s); again soon", exc)
                await asyncio.sleep(RETRY_S)

    async def adopt_all(self) -> list[str]:
        """Claim and follow every task nobody follows; their session ids."""
        adopted = []
        for stored in await self._records.list_all():
            if needs_follower(stored.session) and await self._adopt(stored.session):
                adopted.append(stored.session.id)
        if adopted:
            log.info("task adoption: following %d tasks again", len(adopted))
        return adopted

    async def adopt(self, session_id: str) -> bool:
        stored = await self._records.get(session_id)
        if stored is None or not needs_follower(stored.session):
            return False
        return await self._adopt(stored.session)

    async def _adopt(self, session: Session) -> bool:
        placement = session.placement
        assert placement is not None
        host = placed_host(self._directory, placement.host_id, placement.host_epoch)
        if host is None:
            # The host is gone: the janitor fails the session ("worker host lost").
            return False
        if self._task_runs.running(session.id) or not await self._task_runs.claim(session.id):
            return False
        # Read again under the claim: the task may have ended meanwhile.
        stored = await self._records.get(session.id)
        if stored is None or not needs_follower(stored.session):
            await self._owners.release(session.id)
            return False
        self._task_runs.attach(session.id, host, stored.session.task.events_applied)
        return True
