"""The janitor: everything that ends or frees without anyone asking.

- reaping: sessions past their lifetime or idle too long end, FINISHED ones
  after the shorter finished_idle_s; ended sessions past the retention period
  are removed;
- stranded sessions: a live session whose slot or browser is gone from its
  host fails (found so twice in a row: a slot or browser being made by another
  writer is not taken for lost);
- lost hosts: when a host's registration ends (WorkerDirectory.lost_hosts), or
  a session's host is found gone or with another epoch, its sessions fail with
  "worker host lost"; the other hosts' sessions are left alone;
- orphan slots: slots a host holds for no live session are given back;
- slot failures: a slot the display reports failed fails its session;
- the audit trail: events older than BATON_AUDIT_RETENTION_S are dropped.
One host failing to answer does not stop the round for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

import grpc

from services.runtime.cancellation import check_cancelled, unless_cancelled
from services.runtime.errors import BatonError
from services.session import failure_reasons
from services.session.audit_log import AuditTrail
from services.session.ending import Ending
from services.session.model import ControlState, Session
from services.session.presence import Presence
from services.session.records import SessionRecords
from services.session.settings import SessionSettings
from services.session.task_runs import TaskRuns
from services.session.workers import LostHost, WorkerDirectory, WorkerHost, placed_host

log = logging.getLogger(__name__)

# A slot-failure watch or lost-host watch cut off is opened again after this.
REWATCH_S = 1.0


class Janitor:
    def __init__(
        self,
        records: SessionRecords,
        directory: WorkerDirectory,
        ending: Ending,
        task_runs: TaskRuns,
        presence: Presence,
        settings: SessionSettings,
        audit: AuditTrail,
    ) -> None:
        self._records = records
        self._audit = audit
        self._directory = directory
        self._ending = ending
        self._task_runs = task_runs
        self._presence = presence
        self._settings = settings
        # Sessions found without their host, slot or browser last round, with why.
        self._stranded: dict[str, str] = {}
        self._loops: list[asyncio.Task[None]] = []
        # One slot-failure watch per live host.
        self._slot_watches: dict[str, tuple[WorkerHost, asyncio.Task[None]]] = {}

    # --- running ---

    def start(self) -> None:
        """Start the rounds, the lost-host watch and the slot-failure watches."""
        self._loops = [
            asyncio.create_task(self._rounds(), name="janitor-rounds"),
            asyncio.create_task(self._watch_lost_hosts(), name="janitor-lost-hosts"),
        ]
        self._follow_hosts()

    async def close(self) -> None:
        tasks = [*self._loops, *(watch for _, watch in self._slot_watches.values())]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._loops, self._slot_watches = [], {}

    async def _rounds(self) -> None:
        settings = self._settings
        interval = min(5.0, settings.idle_timeout_s / 4, settings.finished_idle_s / 4)
        while True:
            check_cancelled()
            await asyncio.sleep(interval)
            self._follow_hosts()
            jobs = (self.reap, self.fail_stranded, self.release_orphans, self.forget_old_audit)
            for job in jobs:
                try:
                    await job()
                except BatonError as exc:
                    unless_cancelled(exc)
                    log.warning("janitor: %s: %s", job.__name__, exc.message)
                except Exception as exc:
                    unless_cancelled(exc)
                    # One bad round must not stop idle and lifetime limits for good.
                    log.exception("janitor: %s: unexpected error", job.__name__)

    def _follow_hosts(self) -> None:
        """Watch the slot failures of every live host, and of no other: a host
        that came back with a new epoch is a new `WorkerHost`, watched anew."""
        live = {view.record.host_id: view.host for view in self._directory.live_hosts()}
        for host_id, (host, watch) in list(self._slot_watches.items()):
            if live.get(host_id) is not host:
                watch.cancel()
                del self._slot_watches[host_id]
        for host_id, host in live.items():
            if host_id not in self._slot_watches:
                watch = asyncio.create_task(
                    self._watch_slot_failures(host_id, host), name=f"slot-failures-{host_id}"
                )
                self._slot_watches[host_id] = (host, watch)

    # --- idle, lifetime, retention ---

    async def reap(self) -> list[Session]:
        """End sessions past their lifetime or idle too long; those ended.

        A FINISHED session is idle `finished_idle_s` after its last visible
        change (the agent finishing, control returned): viewers and API reads do
        not keep it, so its slot is not held for a console left open.
        Sessions ended longer ago than the retention period are removed.
        """
        now = self._records.clock()
        lifetime = timedelta(seconds=self._settings.max_lifetime_s)
        idle = timedelta(seconds=self._settings.idle_timeout_s)
        finished_idle = timedelta(seconds=self._settings.finished_idle_s)
        retention = timedelta(seconds=self._settings.ended_retention_s)
        ended = []
        for stored in await self._records.list_all():
            session = stored.session
            if session.state.terminal:
                if now - session.updated_at >= retention:
                    await self._records.store.delete(session.id, stored.revision)
                continue
            if now - session.created_at >= lifetime:
                reason = f"maximum lifetime of {self._settings.max_lifetime_s:g} s reached"
            elif session.state is ControlState.FINISHED:
                if now - session.updated_at < finished_idle:
                    continue
                reason = f"finished and idle for {self._settings.finished_idle_s:g} s"
            elif (
                not self._presence.watched(session, now)
                and now - self._presence.last_used(session) >= idle
            ):
                reason = f"idle for {self._settings.idle_timeout_s:g} s"
            else:
                continue
            ended.append(await self._ending.finish(session.id, reason, failed=False))
        return ended

    async def forget_old_audit(self) -> int:
        """Drop the audit events past their retention; how many."""
        return await self._audit.forget_expired(self._settings.audit_retention_s)

    # --- lost hosts, stranded sessions ---

    async def fail_lost_host(self, lost: LostHost) -> list[str]:
        """Fail the live sessions placed on `lost` (that epoch); the ids failed."""
        failed = []
        for session in await self._records.live():
            placement = session.placement
            if placement is None or placement.host_id != lost.host_id:
                continue
            if placement.host_epoch and placement.host_epoch != lost.epoch:
                continue  # placed on a later epoch of the same host: not lost
            await self._ending.fail_host_lost(session.id)
            failed.append(session.id)
        return failed

    async def _watch_lost_hosts(self) -> None:
        while True:
            check_cancelled()
            try:
                async for lost in self._directory.lost_hosts():
                    log.warning("worker host %s (epoch %s) lost", lost.host_id, lost.epoch)
                    await self.fail_lost_host(lost)
                    # A new epoch of the host may be live already: watch it now.
                    self._follow_hosts()
                    check_cancelled()
            except BatonError as exc:
                unless_cancelled(exc)
                log.warning("lost-host watch interrupted: %s", exc.message)
            except Exception as exc:
                unless_cancelled(exc)
                log.exception("lost-host watch: unexpected error")
            await asyncio.sleep(REWATCH_S)

    async def fail_stranded(self) -> list[str]:
        """Fail live sessions whose host, slot or browser is gone (a host lost, a
        display, browser or worker restart); the ids failed.

        A session is failed when found so in two rounds in a row, so a slot or
        browser that another writer is just creating is not taken for lost.
        """
        by_host: dict[tuple[str, str], list[Session]] = {}
        for session in await self._records.live():
            if session.placement is not None:
                key = (session.placement.host_id, session.placement.host_epoch)
                by_host.setdefault(key, []).append(session)
        found: dict[str, str] = {}
        for (host_id, epoch), sessions in by_host.items():
            host = placed_host(self._directory, host_id, epoch)
            if host is None:
                found.update({s.id: failure_reasons.HOST_LOST for s in sessions})
                continue
            try:
                found.update(await self._stranded_on(host, sessions))
            except BatonError as exc:
                log.info("janitor: host %s did not answer: %s", host_id, exc.message)
        failed = []
        for session_id, reason in found.items():
            if session_id in self._stranded:
                log.warning("session %s: %s", session_id, reason)
                await self._ending.finish(session_id, reason, failed=True)
                failed.append(session_id)
        self._stranded = {k: v for k, v in found.items() if k not in failed}
        return failed

    async def _stranded_on(self, host: WorkerHost, sessions: list[Session]) -> dict[str, str]:
        slots = {slot.id: slot.session_id for slot in await host.display.list_slots()}
        browsers = frozenset(await host.automation.list_browsers())
        return failure_reasons.stranded(
            sessions, failure_reasons.WorkerView(slots, browsers), self._task_runs.starting()
        )

    # --- orphans, slot failures ---

    async def release_orphans(self) -> list[str]:
        """Free the slots (and browsers) the hosts hold for no live session there.

        They are left by an end whose release failed (worker unreachable), a
        crash between ending and releasing, an allocation that completed after
        its caller gave up, or sessions lost with a restarted in-memory store.
        Returns the slot ids released.
        """
        released = []
        for view in self._directory.live_hosts():
            try:
                released += await self._release_orphans_on(view.record.host_id, view.host)
            except BatonError as exc:
                log.info("janitor: host %s did not answer: %s", view.record.host_id, exc.message)
        return released

    async def _release_orphans_on(self, host_id: str, host: WorkerHost) -> list[str]:
        # Slots first: a session is stored before its slot is allocated, so a
        # slot listed here whose session is not live a moment later is an orphan.
        slots = await host.display.list_slots()
        live = {
            s.id
            for s in await self._records.live()
            if s.placement is None or s.placement.host_id == host_id
        }
        released = []
        for slot in slots:
            if slot.warm or not slot.session_id or slot.session_id in live:
                continue
            log.info("slot %s: held for session %s, which is not live", slot.id, slot.session_id)
            with contextlib.suppress(BatonError):
                await host.automation.close_browser(slot.session_id)
            try:
                await host.display.release_slot(slot.id)
            except BatonError as exc:
                log.info("slot %s: release: %s", slot.id, exc.message)
                continue
            released.append(slot.id)
        return released

    async def _watch_slot_failures(self, host_id: str, host: WorkerHost) -> None:
        """A slot that dies fails its session, visibly to viewers; until the host
        is gone from the directory (its channels are then closed)."""
        while self._directory.host(host_id) is host:
            try:
                async for event in host.display.watch_slots():
                    if event.WhichOneof("event") == "failed":
                        await self._fail_slot(host_id, event.failed.slot.id, event.failed.reason)
                    check_cancelled()
            except BatonError as exc:
                unless_cancelled(exc)
                log.debug("slot watch of host %s interrupted: %s", host_id, exc.message)
            except grpc.aio.UsageError:
                # The directory closed the host's channels: it is gone.
                log.debug("slot watch of host %s: its channel is closed", host_id)
            except Exception as exc:
                unless_cancelled(exc)
                log.exception("slot watch of host %s: unexpected error", host_id)
            await asyncio.sleep(REWATCH_S)

    async def _fail_slot(self, host_id: str, slot_id: str, reason: str) -> None:
        for session in await self._records.live():
            placement = session.placement
            if placement and placement.host_id == host_id and placement.slot_id == slot_id:
                log.warning("session %s: slot %s failed: %s", session.id, slot_id, reason)
                await self._ending.finish(session.id, failure_reasons.DISPLAY_CRASHED, failed=True)
