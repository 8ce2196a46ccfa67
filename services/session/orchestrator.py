"""The session service's application layer.

It applies the control state machine through the store (compare-and-swap, so
racing requests serialize), and drives the worker host around each decision:
allocate a slot and start the task on create, pause automation before a person
gets control and resume it after, release everything when a session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from baton.automation.v1 import automation_pb2
from baton.display.v1 import display_pb2
from services.runtime.errors import (
    BatonError,
    Conflict,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from services.runtime.limits import MAX_STEP_EVENTS_KEPT, check_viewport, truncate_text
from services.runtime.redaction import redact_steps
from services.session import failure_reasons, state_machine
from services.session.codec import TASK_STATUS_FROM_PROTO
from services.session.control_fence import ControlFence
from services.session.model import (
    Action,
    Actor,
    ControlState,
    EventKind,
    LastEvent,
    Placement,
    Session,
    Task,
    TaskStatus,
    Viewport,
)
from services.session.paging import PageKey, key_of
from services.session.settings import SessionSettings
from services.session.store import SessionStore, Stored
from services.session.workers import WorkerHost

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# Writers retry a lost compare-and-swap this many times before giving up.
MAX_SWAP_ATTEMPTS = 50
# API activity is written at most this often per session.
ACTIVITY_RESOLUTION = timedelta(seconds=5)
# How often a pause is asked again while our StartTask has not reached automation.
PAUSE_RETRY_S = 0.02
# Retry-After of a create refused by the per-user session quota: sessions end
# at a person's pace, so asking again sooner rarely helps.
QUOTA_RETRY_AFTER_S = 30
# Task states in which the agent may still act on the browser.
_TASK_ACTIVE = (TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.WAITING_FOR_USER)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SessionSpec:
    task: str
    url: str
    max_steps: int
    steps: tuple[automation_pb2.Step, ...]
    viewport: Viewport | None
    planner: int = automation_pb2.PLANNER_UNSPECIFIED


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
        worker: WorkerHost,
        settings: SessionSettings,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._worker = worker
        self._settings = settings
        self._clock = clock
        self._task_runs: dict[str, asyncio.Task[None]] = {}
        # Sessions whose task stream has delivered an event: automation knows them.
        self._task_seen: set[str] = set()
        # Control changes of one session run one at a time, pause/resume included.
        self._control_locks: dict[str, asyncio.Lock] = {}
        self._create_lock = asyncio.Lock()
        self._background: list[asyncio.Task[None]] = []
        # Edges holding stream viewers; the agent resumes after they closed their gates.
        self._fence = ControlFence(settings.viewer_lease_s)
        # Sessions found without their slot or browser in the last round, with why.
        self._stranded: dict[str, str] = {}

    # --- lifecycle ---

    def start_background(self) -> None:
        """Start the reaper (idle, lifetime) and the slot-failure watcher."""
        self._background = [
            asyncio.create_task(self._reap_forever(), name="session-reaper"),
            asyncio.create_task(self._watch_slot_failures(), name="slot-failures"),
        ]

    async def close(self) -> None:
        runs = [*self._background, *self._task_runs.values()]
        for run in runs:
            run.cancel()
        for run in runs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run
        self._task_runs.clear()

    # --- queries ---

    async def _get_owned(self, actor: Actor, session_id: str) -> Stored:
        stored = await self._store.get(session_id)
        # Another user's session does not exist as far as they can tell.
        if stored is None or not _may_see(actor, stored.session):
            raise NotFound(f"session {session_id} not found")
        return stored

    async def get(self, actor: Actor, session_id: str) -> Session:
        stored = await self._get_owned(actor, session_id)
        await self._touch(stored.session)
        return stored.session

    async def list_sessions(self, actor: Actor, after: PageKey | None = None) -> list[Session]:
        """The actor's sessions in page order, those after `after` only when given."""
        sessions = [
            s.session
            for s in await self._store.list_all()
            if _may_see(actor, s.session) and (after is None or key_of(s.session) > after)
        ]
        return sorted(sessions, key=key_of)

    async def stream_access(self, actor: Actor, session_id: str, edge_id: str = "") -> StreamAccess:
        """Where the stream is and whether `actor` may type; `edge_id` holds the gate."""
        session = (await self._get_owned(actor, session_id)).session
        if session.state.terminal:
            raise FailedPrecondition(f"session {session_id} is {session.state.value}")
        if session.placement is None:
            raise FailedPrecondition(f"session {session_id} has no display yet")
        view_only = not (
            session.state is ControlState.USER_CONTROL
            and session.controller_user_id == actor.user_id
        )
        if edge_id:
            self._fence.access_granted(session_id, edge_id)
        await self._touch(session)
        return StreamAccess(
            session.placement.websocket_url,
            view_only,
            session,
            upstream_password=session.placement.vnc_password,
        )

    async def watch(self, actor: Actor, session_id: str) -> AsyncIterator[Session]:
        """The session now, then every change watchers care about, until it ends."""
        stored = await self._get_owned(actor, session_id)
        yield stored.session
        if stored.session.state.terminal:
            return
        async for change in self._store.watch(session_id, stored.revision):
            if change.session.last_event.kind is not EventKind.BOOKKEEPING:
                yield change.session
            if change.session.state.terminal:
                return

    # --- commands ---

    async def create(self, actor: Actor, spec: SessionSpec) -> Session:
        """Start a session; one refused or failed here leaves no record behind."""
        viewport = self._check_spec(spec)
        now = self._clock()
        session = Session(
            id=uuid.uuid4().hex,
            owner_user_id=actor.user_id,
            task=Task(
                text=spec.task,
                url=spec.url,
                max_steps=spec.max_steps or self._settings.default_max_steps,
                # Fill values and typed text go to automation only (runtime.redaction).
                steps=redact_steps(spec.steps),
                planner=spec.planner,
            ),
            viewport=viewport,
            created_at=now,
            updated_at=now,
            last_activity_at=now,
        )
        # Counting and storing under one lock: concurrent creates of one user
        # cannot all pass the quota (within this process).
        async with self._create_lock:
            await self._check_quota(actor)
            await self._store.create(session)
        launch = self._launch(session, spec.steps)
        try:
            return await asyncio.wait_for(launch, self._settings.start_timeout_s)
        except TimeoutError:
            await self._abandon(session.id, "the display or the task did not start in time")
            raise DeadlineExceeded("session did not start in time") from None
        except BatonError as exc:
            await self._abandon(session.id, f"could not start: {exc.message}")
            raise
        except asyncio.CancelledError:
            # The caller went away (deadline, disconnect): nobody has the id to
            # use or end it, so it must not sit STARTING on a slot until idle.
            await self._abandon(session.id, "could not start: the request was cancelled")
            raise
        except Exception:
            await self._abandon(session.id, "could not start: internal error")
            raise

    async def _check_quota(self, actor: Actor) -> None:
        limit = self._settings.max_sessions_per_user
        if actor.operator or not limit:
            return
        live = sum(
            1
            for stored in await self._store.list_all()
            if stored.session.owner_user_id == actor.user_id and not stored.session.state.terminal
        )
        if live >= limit:
            raise ResourceExhausted(
                f"user {actor.user_id} has {live} live sessions, the most allowed "
                f"(BATON_MAX_SESSIONS_PER_USER={limit}); end one first",
                retry_after_s=QUOTA_RETRY_AFTER_S,
            )

    async def _abandon(self, session_id: str, reason: str) -> None:
        """Free what a create that failed took, and forget the session: its
        caller never got the id, and records of refused creates must not pile up."""
        log.info("session %s: %s", session_id, reason)
        stored = await self._store.get(session_id)
        if stored is not None and stored.session.state.terminal:
            return  # ended by someone who saw it (a list): theirs to read
        await self._finish(session_id, reason, True)
        for _ in range(MAX_SWAP_ATTEMPTS):
            stored = await self._store.get(session_id)
            if stored is None or await self._store.delete(session_id, stored.revision):
                break
        self._control_locks.pop(session_id, None)

    def _check_spec(self, spec: SessionSpec) -> Viewport:
        if not spec.url and not spec.steps:
            raise InvalidArgument("a session needs a url or explicit steps")
        if spec.max_steps < 0:
            raise InvalidArgument("maxSteps must not be negative")
        if spec.steps and spec.max_steps and len(spec.steps) > spec.max_steps:
            raise InvalidArgument(f"{len(spec.steps)} steps given but maxSteps is {spec.max_steps}")
        viewport = spec.viewport or Viewport(
            self._settings.default_width, self._settings.default_height
        )
        check_viewport(viewport.width, viewport.height)
        return viewport

    async def _launch(self, session: Session, steps: tuple[automation_pb2.Step, ...]) -> Session:
        """Place the session and start its task; `steps` as given, secrets included."""
        worker = self._worker
        slot = await worker.display.allocate_slot(
            session.id,
            display_pb2.Viewport(width=session.viewport.width, height=session.viewport.height),
        )
        placement = Placement(
            host_id=slot.host_id or worker.host_id,
            slot_id=slot.id,
            display=slot.display,
            websocket_url=slot.websocket_url,
            display_address=worker.display_address,
            automation_address=worker.automation_address,
            vnc_password=slot.vnc_password,
            xauthority=slot.xauthority,
        )

        def place(s: Session) -> Session:
            # Ended (EndSession, the reaper) while the slot was being allocated:
            # nobody will release a slot the ended session does not name.
            if s.state.terminal:
                raise FailedPrecondition(f"session {s.id} ended while starting")
            return _bookkeeping(replace(s, placement=placement))

        try:
            placed = await self._update(session.id, place)
        except BaseException:
            await worker.display.release_slot(slot.id)
            raise
        request = automation_pb2.StartTaskRequest(
            session_id=session.id,
            display=slot.display,
            xauthority=slot.xauthority,
            viewport=display_pb2.Viewport(
                width=session.viewport.width, height=session.viewport.height
            ),
            task_text=session.task.text,
            url=session.task.url,
            max_steps=session.task.max_steps,
            steps=steps,
            planner=session.task.planner,  # type: ignore[arg-type]
        )
        now = self._clock()
        ready = await self._update(placed.id, lambda s: state_machine.mark_ready(s, now))
        self._task_runs[session.id] = asyncio.create_task(
            self._run_task(session.id, request), name=f"task-{session.id}"
        )
        return ready

    async def change_control(
        self,
        actor: Actor,
        session_id: str,
        action: Action,
        expected_version: int | None,
    ) -> Session:
        if action is Action.END:
            stored = await self._get_owned(actor, session_id)
            state_machine.check_version(stored.session, expected_version)
            return await self.end(actor, session_id, "ended by the user")
        await self._get_owned(actor, session_id)
        # Serialized per session, so a resume of one change cannot land after
        # the pause of the next one.
        lock = self._control_locks.setdefault(session_id, asyncio.Lock())
        async with lock:
            return await self._change_control(actor, session_id, action, expected_version)

    async def _change_control(
        self,
        actor: Actor,
        session_id: str,
        action: Action,
        expected_version: int | None,
    ) -> Session:
        session = (await self._get_owned(actor, session_id)).session
        # Refuse before touching automation when the action is not allowed.
        state_machine.check_version(session, expected_version)
        if state_machine.is_noop(session, action, actor):
            return session
        state_machine.next_state(session, action, actor)
        leaving_user = session.state is ControlState.USER_CONTROL
        pausing = action in (Action.TAKE_CONTROL, Action.PAUSE)
        now = self._clock()
        try:
            if pausing:
                # Control changes hands only once the agent has stopped acting.
                await self._pause_agent(session)
            changed = await self._update(
                session_id,
                lambda s: state_machine.apply(s, action, actor, now, expected_version),
            )
        except BaseException:
            if pausing:
                # The change did not happen (a step bumped the version meanwhile,
                # ...): an agent still in control must not stay paused.
                await self._undo_pause(session_id)
            raise
        if action in (Action.RETURN_CONTROL, Action.RESUME):
            if leaving_user:
                # The fence: no agent action before every edge's gates are closed
                # (services/session/README.md, "The handoff fence").
                late = await self._fence.wait(
                    session_id, changed.version, self._settings.control_fence_timeout_s
                )
                if late:
                    log.warning(
                        "session %s: edges %s did not confirm their input gates closed "
                        "within %g s; their viewers are treated as gone",
                        session_id,
                        ", ".join(late),
                        self._settings.control_fence_timeout_s,
                    )
            await self._resume_agent(changed)
        return changed

    async def acknowledge_control(self, session_id: str, edge_id: str, version: int) -> None:
        """`edge_id` has applied `version` (or newer) of the session to its input gates."""
        await self._fence.acknowledge(session_id, edge_id, version)

    async def _undo_pause(self, session_id: str) -> None:
        try:
            stored = await self._store.get(session_id)
            if stored is not None and stored.session.state is ControlState.AI_CONTROL:
                await self._resume_agent(stored.session)
        except BatonError as exc:
            # The original failure is what the caller hears about.
            log.warning("session %s: undoing a pause failed: %s", session_id, exc.message)

    async def _pause_agent(self, session: Session) -> None:
        # Whatever the task's status: a finished task's browser still takes Act
        # calls, and automation's action gate is what refuses them.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.start_timeout_s
        while True:
            try:
                await self._worker.automation.pause_task(session.id)
                return
            except FailedPrecondition:
                return
            except NotFound:
                # No pause state there: nothing can act, unless our StartTask is
                # still on its way (a take_control right after create). Its pause
                # state exists once it arrives, so ask again until then.
                if not self._task_in_flight(session.id) or loop.time() >= deadline:
                    return
                await asyncio.sleep(PAUSE_RETRY_S)

    def _task_in_flight(self, session_id: str) -> bool:
        """Our StartTask runs but automation has not answered it yet."""
        return session_id in self._task_runs and session_id not in self._task_seen

    async def _resume_agent(self, session: Session) -> None:
        try:
            await self._worker.automation.resume_task(session.id)
        except BatonError as exc:
            if session.task.status not in _TASK_ACTIVE:
                # No agent left to resume (its browser may be gone): nothing lost.
                log.info("session %s: reopening the action gate: %s", session.id, exc.message)
                return
            log.warning("session %s: resume failed: %s", session.id, exc.message)
            await self._record_error(session.id, f"the agent could not resume: {exc.message}")

    async def end(self, actor: Actor, session_id: str, reason: str) -> Session:
        await self._get_owned(actor, session_id)
        return await self._finish(session_id, reason, failed=False)

    async def record_activity(
        self,
        session_id: str,
        viewers_delta: int,
        input_seen: bool,
        viewer_seen: bool = False,
        edge_id: str = "",
    ) -> None:
        """Count viewers joining (+1) and leaving (-1), user input, and viewers
        still present (`viewer_seen`, refreshed at most once per resolution);
        `edge_id` is the edge that holds them."""
        if edge_id and (viewers_delta or viewer_seen):
            self._fence.viewers_changed(session_id, edge_id, viewers_delta)
        now = self._clock()
        # Refresh presence well within the lease, but not on every report.
        resolution = min(ACTIVITY_RESOLUTION, timedelta(seconds=self._settings.viewer_lease_s / 3))

        def change(s: Session) -> Session:
            if s.state.terminal:
                return s
            if (
                not viewers_delta
                and not input_seen
                and s.viewers_seen_at is not None
                and now - s.viewers_seen_at < resolution
            ):
                return s
            return _bookkeeping(
                replace(
                    s,
                    viewer_count=max(0, s.viewer_count + viewers_delta),
                    viewers_seen_at=now if viewer_seen or viewers_delta > 0 else s.viewers_seen_at,
                    last_activity_at=now if input_seen or viewers_delta else s.last_activity_at,
                )
            )

        await self._update(session_id, change)

    def _watched(self, session: Session, now: datetime) -> bool:
        """Viewers count while a gateway keeps reporting them."""
        lease = timedelta(seconds=self._settings.viewer_lease_s)
        seen = session.viewers_seen_at
        return session.viewer_count > 0 and seen is not None and now - seen < lease

    # --- the task's event stream ---

    async def _run_task(self, session_id: str, request: automation_pb2.StartTaskRequest) -> None:
        try:
            async for event in self._worker.automation.start_task(request):
                self._task_seen.add(session_id)
                await self._apply_task_event(session_id, event)
        except asyncio.CancelledError:
            raise
        except BatonError as exc:
            log.warning("session %s: task stream failed: %s", session_id, exc.message)
            await self._finish(session_id, await self._why_stream_broke(session_id), failed=True)
        except Exception:
            log.exception("session %s: task stream crashed", session_id)
            await self._finish(session_id, failure_reasons.AUTOMATION_FAILED, failed=True)
        finally:
            if self._task_runs.get(session_id) is asyncio.current_task():
                del self._task_runs[session_id]
            self._task_seen.discard(session_id)

    async def _why_stream_broke(self, session_id: str) -> str:
        """Ask the worker host what is gone: the slot, the automation service or the browser."""
        stored = await self._store.get(session_id)
        placement = stored.session.placement if stored else None
        try:
            slots = {s.id: s.session_id for s in await self._worker.display.list_slots()}
            if placement is not None and slots.get(placement.slot_id) != session_id:
                return failure_reasons.DISPLAY_CRASHED
        except BatonError:
            return failure_reasons.DISPLAY_CRASHED
        try:
            await self._worker.automation.list_browsers()
        except BatonError:
            return failure_reasons.AUTOMATION_CRASHED
        return failure_reasons.BROWSER_CRASHED

    async def _apply_task_event(
        self, session_id: str, event: automation_pb2.StartTaskResponse
    ) -> None:
        now = self._clock()
        kind = event.WhichOneof("event")

        def change(s: Session) -> Session:
            if s.state.terminal:
                return s
            task = s.task
            reason = s.user_request_reason
            last = LastEvent(EventKind.TASK_CHANGED)
            steps = s.steps
            if kind == "step":
                step = _bounded_step_event(event.step)
                steps = (*s.steps, step)[-MAX_STEP_EVENTS_KEPT:]
                if step.status == automation_pb2.STEP_STATUS_SUCCEEDED:
                    task = replace(task, steps_completed=task.steps_completed + 1)
                last = LastEvent(EventKind.STEP, step=step)
            elif kind == "status_changed":
                changed = event.status_changed
                status = TASK_STATUS_FROM_PROTO.get(changed.status, task.status)
                task = replace(
                    task,
                    status=status,
                    reason=truncate_text(changed.reason),
                    steps_completed=max(task.steps_completed, changed.steps_completed),
                )
                if status is not TaskStatus.WAITING_FOR_USER:
                    reason = ""
                if status is TaskStatus.FAILED:
                    last = LastEvent(
                        EventKind.ERROR, message=truncate_text(f"task failed: {changed.reason}")
                    )
            elif kind == "user_requested":
                reason = truncate_text(event.user_requested.reason or "the agent asks for a person")
                task = replace(task, status=TaskStatus.WAITING_FOR_USER, reason=reason)
            else:
                return s
            return replace(
                s,
                task=task,
                steps=steps,
                user_request_reason=reason,
                version=s.version + 1,
                updated_at=now,
                last_activity_at=now,
                last_event=last,
            )

        with contextlib.suppress(NotFound):
            await self._update(session_id, change)

    async def _record_error(self, session_id: str, message: str) -> None:
        now = self._clock()

        def change(s: Session) -> Session:
            if s.state.terminal:
                return s  # ended meanwhile: its end is the last word
            return replace(
                s,
                version=s.version + 1,
                updated_at=now,
                last_event=LastEvent(EventKind.ERROR, message=message),
            )

        await self._update(session_id, change)

    # --- ending ---

    async def _finish(self, session_id: str, reason: str, failed: bool) -> Session:
        """End the session (once) and free its browser and display."""
        now = self._clock()
        reason = truncate_text(reason)
        ended_here = False

        def change(s: Session) -> Session:
            nonlocal ended_here
            ended_here = not s.state.terminal
            return state_machine.finish(s, now, reason, failed) if ended_here else s

        ended = await self._update(session_id, change)
        if not ended_here:
            return ended
        self._control_locks.pop(session_id, None)
        self._fence.forget(session_id)
        run = self._task_runs.pop(session_id, None)
        if run is not None and run is not asyncio.current_task():
            run.cancel()
            # The StartTask stream is closed before CloseBrowser goes out, so
            # automation cannot open a browser for it after the close.
            await asyncio.wait([run])
        await self._release(ended)
        return ended

    async def _release(self, session: Session) -> None:
        placement = session.placement
        if placement is None:
            return
        automation = self._worker.automation
        for step in (automation.cancel_task, automation.close_browser):
            try:
                await step(session.id)
            except BatonError as exc:
                log.info("session %s: %s: %s", session.id, step.__name__, exc.message)
        try:
            await self._worker.display.release_slot(placement.slot_id)
        except BatonError as exc:
            log.info("session %s: release slot: %s", session.id, exc.message)

    async def reap(self) -> list[Session]:
        """End sessions past their lifetime or idle too long; those ended.

        Sessions ended longer ago than the retention period are removed.
        """
        now = self._clock()
        lifetime = timedelta(seconds=self._settings.max_lifetime_s)
        idle = timedelta(seconds=self._settings.idle_timeout_s)
        retention = timedelta(seconds=self._settings.ended_retention_s)
        ended = []
        for stored in await self._store.list_all():
            session = stored.session
            if session.state.terminal:
                if now - session.updated_at >= retention:
                    await self._store.delete(session.id, stored.revision)
                    self._control_locks.pop(session.id, None)
                continue
            if now - session.created_at >= lifetime:
                reason = f"maximum lifetime of {self._settings.max_lifetime_s:g} s reached"
            elif (
                not self._watched(session, now)
                and now
                - max(session.last_activity_at, session.viewers_seen_at or session.last_activity_at)
                >= idle
            ):
                reason = f"idle for {self._settings.idle_timeout_s:g} s"
            else:
                continue
            ended.append(await self._finish(session.id, reason, failed=False))
        return ended

    async def release_orphans(self) -> list[str]:
        """Free the slots (and browsers) the display holds for no live session.

        They are left by an end whose release failed (worker unreachable), a
        crash between ending and releasing, an allocation that completed after
        its caller gave up, or sessions lost with a restarted in-memory store.
        Returns the slot ids released.
        """
        # Slots first: a session is stored before its slot is allocated, so a
        # slot listed here whose session is not live a moment later is an orphan.
        slots = await self._worker.display.list_slots()
        live = {s.session.id for s in await self._store.list_all() if not s.session.state.terminal}
        released = []
        for slot in slots:
            if slot.warm or not slot.session_id or slot.session_id in live:
                continue
            log.info("slot %s: held for session %s, which is not live", slot.id, slot.session_id)
            with contextlib.suppress(BatonError):
                await self._worker.automation.close_browser(slot.session_id)
            try:
                await self._worker.display.release_slot(slot.id)
            except BatonError as exc:
                log.info("slot %s: release: %s", slot.id, exc.message)
                continue
            released.append(slot.id)
        return released

    async def recover_after_restart(self) -> list[str]:
        """Sessions stored by a previous run of this (only) session service whose
        task was running: automation stopped it when our StartTask stream
        closed, so say so; the session and its browser stay. Returns their ids."""
        now = self._clock()
        recovered = []

        def change(s: Session) -> Session:
            if s.state.terminal or s.task.status not in _TASK_ACTIVE:
                return s
            task = replace(
                s.task, status=TaskStatus.CANCELLED, reason=failure_reasons.TASK_INTERRUPTED
            )
            return replace(
                s,
                task=task,
                user_request_reason="",
                version=s.version + 1,
                updated_at=now,
                last_event=LastEvent(EventKind.TASK_CHANGED),
            )

        for stored in await self._store.list_all():
            if await self._update(stored.session.id, change) is not stored.session:
                recovered.append(stored.session.id)
        if recovered:
            log.info("after a restart: %d sessions lost their running task", len(recovered))
        return recovered

    async def fail_stranded(self) -> list[str]:
        """Fail live sessions whose slot or browser is gone from the worker host
        (a display, browser or worker restart); the ids failed.

        A session is failed when found so in two rounds in a row, so a slot or
        browser that another writer is just creating is not taken for lost.
        """
        sessions = [s.session for s in await self._store.list_all()]
        slots = {slot.id: slot.session_id for slot in await self._worker.display.list_slots()}
        browsers = frozenset(await self._worker.automation.list_browsers())
        starting = frozenset(s for s in self._task_runs if self._task_in_flight(s))
        found = failure_reasons.stranded(
            sessions, failure_reasons.WorkerView(slots, browsers), starting
        )
        failed = []
        for session_id, reason in found.items():
            if session_id in self._stranded:
                log.warning("session %s: %s", session_id, reason)
                await self._finish(session_id, reason, failed=True)
                failed.append(session_id)
        self._stranded = {k: v for k, v in found.items() if k not in failed}
        return failed

    async def _reap_forever(self) -> None:
        interval = min(5.0, self._settings.idle_timeout_s / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap()
                await self.fail_stranded()
                await self.release_orphans()
            except BatonError as exc:
                log.warning("reaper: %s", exc.message)
            except Exception:
                # One bad round must not stop idle and lifetime limits for good.
                log.exception("reaper: unexpected error")

    async def _watch_slot_failures(self) -> None:
        """A slot that dies fails its session, visibly to viewers."""
        while True:
            try:
                async for event in self._worker.display.watch_slots():
                    if event.WhichOneof("event") == "failed":
                        await self._fail_slot(event.failed.slot.id, event.failed.reason)
            except BatonError as exc:
                log.debug("slot watch interrupted: %s", exc.message)
            except Exception:
                log.exception("slot watch: unexpected error")
            await asyncio.sleep(1.0)

    async def _fail_slot(self, slot_id: str, reason: str) -> None:
        for stored in await self._store.list_all():
            session = stored.session
            placement = session.placement
            if placement and placement.slot_id == slot_id and not session.state.terminal:
                log.warning("session %s: slot %s failed: %s", session.id, slot_id, reason)
                await self._finish(session.id, failure_reasons.DISPLAY_CRASHED, failed=True)

    # --- store access ---

    async def _touch(self, session: Session) -> None:
        """Count an API call as activity, writing at most once per resolution."""
        now = self._clock()
        if session.state.terminal or now - session.last_activity_at < ACTIVITY_RESOLUTION:
            return
        with contextlib.suppress(NotFound, Conflict):
            await self._update(
                session.id,
                lambda s: _bookkeeping(replace(s, last_activity_at=max(now, s.last_activity_at))),
            )

    async def _update(self, session_id: str, change: Callable[[Session], Session]) -> Session:
        """Apply `change` atomically: re-read and retry when another writer won."""
        for _ in range(MAX_SWAP_ATTEMPTS):
            stored = await self._store.get(session_id)
            if stored is None:
                raise NotFound(f"session {session_id} not found")
            changed = change(stored.session)
            if changed is stored.session:
                return changed
            if await self._store.swap(changed, stored.revision) is not None:
                return changed
        raise Conflict(f"session {session_id} is changing too fast; try again")


def _bounded_step_event(event: automation_pb2.StepEvent) -> automation_pb2.StepEvent:
    """The event as stored: its texts cut to the stored-field bound."""
    bounded = automation_pb2.StepEvent()
    bounded.CopyFrom(event)
    for name in ("action", "description", "url", "error", "result"):
        setattr(bounded, name, truncate_text(getattr(event, name)))
    return bounded


def _may_see(actor: Actor, session: Session) -> bool:
    return actor.operator or session.owner_user_id == actor.user_id


def _bookkeeping(session: Session) -> Session:
    return replace(session, last_event=LastEvent(EventKind.BOOKKEEPING))
