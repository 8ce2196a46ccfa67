"""The session service's application layer: a facade over the session plane.

Each part does one job (services/session/README.md, "Modules"):
launcher (create), placement (a host and a slot), handoff (control changes,
the agent paused and resumed around them, the control fence), task runs and
task projection (the agent's events into the session), task owners and task
adoption (one replica follows each task; tasks nobody follows are followed
again), presence (viewers,
activity), janitor (reaping, lost hosts, stranded sessions, orphan slots, slot
failures) and ending (the one way a session ends). They share the session
records (records.py: compare-and-swap on the store) and the WorkerDirectory
(workers.py) through which every worker call about a session goes to its host.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from baton.automation.v1 import automation_pb2
from services.runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.runtime.slot_demand import FleetCapacity, fleet_capacity
from services.session import state_machine
from services.session.audit_log import AuditKind, AuditLog, AuditTrail, MemoryAuditLog
from services.session.auto_return import check_conditions
from services.session.control_fence import ControlFence, MemoryControlFence
from services.session.ending import Ending
from services.session.handoff import Handoff
from services.session.janitor import Janitor
from services.session.launcher import Launcher, SessionSpec
from services.session.model import (
    Action,
    Actor,
    AutoReturn,
    ControlState,
    EventKind,
    FullSession,
    LastEvent,
    Session,
)
from services.session.paging import PageKey, key_of
from services.session.placement import Placer
from services.session.presence import Presence
from services.session.recordings import RecordingReader
from services.session.records import SessionRecords
from services.session.settings import SessionSettings
from services.session.share_rules import check_action, may_control, may_see, refuse_share
from services.session.shares import Shares
from services.session.store import SessionStore
from services.session.task_adoption import TaskAdoption
from services.session.task_owners import LocalTaskOwners, TaskOwners
from services.session.task_runs import HOST_LOST_MARGIN_S, TaskRuns
from services.session.user_lock import LocalUserLock, UserLock
from services.session.webhooks import WebhookSink, webhook_observer
from services.session.workers import UNKNOWN_CAPACITY, WorkerDirectory, placed_host

__all__ = ["SessionOrchestrator", "SessionSpec", "StreamAccess", "utc_now"]

Clock = Callable[[], datetime]

# How often an external CDP client's commands count as the session's activity.
CDP_ACTIVITY_INTERVAL_S = 5.0


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class StreamAccess:
    upstream_url: str
    view_only: bool
    session: Session
    upstream_password: str = field(default="", repr=False)


class SessionOrchestrator:
    def __init__(
        self,
        store: SessionStore,
        directory: WorkerDirectory,
        settings: SessionSettings,
        clock: Clock = utc_now,
        owners: TaskOwners | None = None,
        fence: ControlFence | None = None,
        user_lock: UserLock | None = None,
        webhooks: WebhookSink | None = None,
        audit_log: AuditLog | None = None,
    ) -> None:
        """`owners`, `fence` and `user_lock` default to this process's own; replicas
        sharing etcd share them through it (server.py). `audit_log` defaults to
        one in memory."""
        records = SessionRecords(store, clock, webhook_observer(webhooks) if webhooks else None)
        # Edges holding stream viewers; the agent resumes after they closed their gates.
        if fence is None:
            fence = MemoryControlFence(settings.viewer_lease_s)
        self._records = records
        self._directory = directory
        # One session service alone (the embedded store) claims in memory.
        owners = owners or LocalTaskOwners()
        self._task_runs = TaskRuns(
            records,
            directory,
            owners,
            lambda sid, why: self._ending.finish(sid, why, failed=True),
            # A host's record goes at most this long after the host.
            host_lost_within_s=settings.worker_lease_ttl_s + HOST_LOST_MARGIN_S,
        )
        self._adoption = TaskAdoption(records, directory, owners, self._task_runs)
        self._handoff = Handoff(
            records,
            directory,
            fence,
            settings,
            self._task_runs.in_flight,
            lambda sid: self._ending.fail_host_lost(sid),
        )
        self._ending = Ending(
            records, directory, self._task_runs.stop, (fence.forget, self._handoff.forget)
        )
        self._presence = Presence(records, fence, settings)
        self.audit = AuditTrail(audit_log or MemoryAuditLog(), clock)
        self.shares = Shares(records, self.audit)
        self.recordings = RecordingReader(records, directory)
        self._launcher = Launcher(
            records,
            Placer(directory),
            self._task_runs,
            self._ending,
            settings,
            LocalUserLock() if user_lock is None else user_lock,
        )
        self._janitor = Janitor(
            records,
            directory,
            self._ending,
            self._task_runs,
            self._presence,
            settings,
            self.audit,
        )
        # The janitor's jobs, callable on their own (tests, start-up).
        self.reap = self._janitor.reap
        self.fail_stranded = self._janitor.fail_stranded
        self.release_orphans = self._janitor.release_orphans
        self.adopt_tasks = self._adoption.adopt_all
        self.fail_lost_host = self._janitor.fail_lost_host
        self.forget_old_audit = self._janitor.forget_old_audit

    # --- lifecycle ---

    def start_background(self) -> None:
        """Start the janitor (reaping, lost hosts, stranded sessions, slot failures)
        and task adoption (tasks nobody follows, from now on and left from before)."""
        self._janitor.start()
        self._adoption.start()

    async def close(self) -> None:
        await self._handoff.auto_returns.close()
        await self._adoption.close()
        await self._janitor.close()
        await self._task_runs.close()

    # --- queries ---

    async def get(self, actor: Actor, session_id: str) -> Session:
        stored = await self._records.get_owned(actor, session_id)
        await self._presence.touch(stored.session)
        return stored.session

    async def get_full(self, actor: Actor, session_id: str) -> FullSession:
        """The session with the steps its log keeps (GetSession's full view)."""
        full, _ = await self._records.get_full_owned(actor, session_id)
        await self._presence.touch(full.session)
        return full

    async def list_sessions(self, actor: Actor, after: PageKey | None = None) -> list[Session]:
        """The actor's sessions in page order, those after `after` only when given."""
        now = self._records.clock()
        sessions = [
            s.session
            for s in await self._records.list_all()
            if may_see(actor, s.session, now) and (after is None or key_of(s.session) > after)
        ]
        return sorted(sessions, key=key_of)

    async def stream_access(self, actor: Actor, session_id: str, edge_id: str = "") -> StreamAccess:
        """Where the stream is and whether `actor` may type; `edge_id` holds the gate."""
        session = (await self._records.get_owned(actor, session_id)).session
        if session.state.terminal:
            raise FailedPrecondition(f"session {session_id} is {session.state.value}")
        if session.placement is None:
            raise FailedPrecondition(f"session {session_id} has no display yet")
        view_only = not (
            session.state is ControlState.USER_CONTROL
            and session.controller_user_id == actor.user_id
        )
        if edge_id:
            await self._presence.access_granted(session_id, edge_id)
        await self._presence.touch(session)
        return StreamAccess(
            session.placement.websocket_url,
            view_only,
            session,
            upstream_password=session.placement.vnc_password,
        )

    async def cdp(
        self, actor: Actor, session_id: str, reject: bool, commands: AsyncIterator[str]
    ) -> AsyncIterator[automation_pb2.CdpResponse]:
        """An external CDP client of the session's browser, for its owner or an
        operator (services/automation/README.md, "CDP")."""
        refuse_share(actor, "open the browser's CDP endpoint")
        session = (await self._records.get_owned(actor, session_id)).session
        if session.state.terminal:
            raise FailedPrecondition(f"session {session_id} is {session.state.value}")
        placement = session.placement
        if placement is None:
            raise FailedPrecondition(f"session {session_id} has no browser yet")
        host = placed_host(self._directory, placement.host_id, placement.host_epoch)
        if host is None:
            raise FailedPrecondition(f"session {session_id} lost its worker host")
        await self._presence.touch(session)

        async def active(commands: AsyncIterator[str]) -> AsyncIterator[str]:
            # The agent's commands keep the session from idling out (a read and
            # maybe a write every CDP_ACTIVITY_INTERVAL_S, not per command).
            noted = time.monotonic()
            async for command in commands:
                if time.monotonic() - noted >= CDP_ACTIVITY_INTERVAL_S:
                    noted = time.monotonic()
                    stored = await self._records.get(session_id)
                    if stored is not None:
                        await self._presence.touch(stored.session)
                yield command

        async for response in host.automation.cdp(session_id, reject, active(commands)):
            yield response

    async def watch(
        self, actor: Actor, session_id: str
    ) -> tuple[FullSession, AsyncIterator[Session]]:
        """The session now with its steps, and then every change watchers care
        about (the record alone: its last event says what changed) until it ends.

        The store bounds what it holds for a watcher (store.py): one that falls
        too far behind is cut off with Unavailable and watches again."""
        full, revision = await self._records.get_full_owned(actor, session_id)
        return full, self._changes(full.session, revision)

    async def _changes(self, session: Session, revision: int) -> AsyncIterator[Session]:
        if session.state.terminal:
            return
        async for change in self._records.store.watch(session.id, revision):
            if change.session.last_event.kind is not EventKind.BOOKKEEPING:
                yield change.session
            if change.session.state.terminal:
                return

    def capacity(self) -> FleetCapacity:
        """The worker hosts' slots as the directory shows them (no call to any host)."""
        return fleet_capacity(
            (view.record for view in self._directory.live_hosts()), UNKNOWN_CAPACITY
        )

    # --- commands ---

    async def create(self, actor: Actor, spec: SessionSpec) -> Session:
        """Start a session; one refused or failed here leaves no record behind."""
        refuse_share(actor, "start sessions")
        return await self._launcher.create(actor, spec)

    async def change_control(
        self,
        actor: Actor,
        session_id: str,
        action: Action,
        expected_version: int | None,
        to_user_id: str = "",
        auto_return: AutoReturn | None = None,
    ) -> Session:
        stored = await self._records.get_owned(actor, session_id)
        now = self._records.clock()
        check_action(actor, stored.session, action, now)
        if state_machine.is_noop(stored.session, action, actor):
            # Taking control one holds says "still here": an idle auto-return
            # counts from now (the console's Keep control).
            await self._presence.record_activity(session_id, 0, input_seen=True)
        if action is Action.END:
            state_machine.check_version(stored.session, expected_version)
            return await self.end(actor, session_id, "ended by the user")
        if action is Action.HAND_OVER and not may_control(to_user_id, stored.session, now):
            # Nobody else may see the session: no one to name in the message.
            raise InvalidArgument(
                "hand_over's `to` must be the session's owner, an operator, "
                "or the guest of a live control share"
            )
        if auto_return is not None and action is not Action.TAKE_CONTROL:
            raise InvalidArgument("autoReturn is for take_control only")
        session = await self._handoff.change(
            actor,
            session_id,
            action,
            expected_version,
            to_user_id,
            None if auto_return is None else check_conditions(auto_return),
        )
        detail = {"action": action.value, "state": session.state.value}
        if action is Action.HAND_OVER:
            detail["to"] = to_user_id
        await self._audit_control(actor, session_id, detail)
        return session

    async def _audit_control(self, actor: Actor, session_id: str, detail: dict[str, str]) -> None:
        """The acting user (not the new holder) and where they called from."""
        await self.audit.record(
            session_id, AuditKind.CONTROL_CHANGED, actor.user_id, actor.source_address, detail
        )

    async def request_control(self, actor: Actor, session_id: str) -> Session:
        """Ask the person in control for it: watchers hear who asks; nothing changes."""
        stored = await self._records.get_owned(actor, session_id)
        now = self._records.clock()
        check_action(actor, stored.session, Action.TAKE_CONTROL, now)

        def ask(session: Session) -> Session:
            if session.state is not ControlState.USER_CONTROL:
                raise FailedPrecondition(
                    f"nobody holds control of session {session_id} "
                    f"({session.state.value}): take it instead"
                )
            if session.controller_user_id == actor.user_id:
                raise FailedPrecondition("you already hold control")
            if not may_control(actor.user_id, session, now):
                raise PermissionDenied("only someone who may take control can ask for it")
            return replace(
                session,
                version=session.version + 1,
                updated_at=now,
                last_event=LastEvent(EventKind.CONTROL_REQUESTED, message=actor.user_id),
            )

        session = await self._records.update(session_id, ask)
        await self.audit.record(
            session_id, AuditKind.CONTROL_REQUESTED, actor.user_id, actor.source_address
        )
        return session

    async def acknowledge_control(self, session_id: str, edge_id: str, version: int) -> None:
        """`edge_id` has applied `version` (or newer) of the session to its input gates."""
        await self._handoff.acknowledge(session_id, edge_id, version)

    async def end(self, actor: Actor, session_id: str, reason: str) -> Session:
        refuse_share(actor, "end the session")
        await self._records.get_owned(actor, session_id)
        session = await self._ending.finish(session_id, reason, failed=False)
        await self._audit_control(actor, session_id, {"action": "end", "reason": reason})
        return session

    async def record_activity(
        self,
        session_id: str,
        viewers_delta: int,
        input_seen: bool,
        viewer_seen: bool = False,
        edge_id: str = "",
        keys: int = 0,
        pointer: int = 0,
    ) -> None:
        """Viewers joining (+1), leaving (-1) or present, and user input with
        its event counts (presence.py)."""
        await self._presence.record_activity(
            session_id, viewers_delta, input_seen, viewer_seen, edge_id, keys, pointer
        )
