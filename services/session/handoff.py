"""The handoff: control changing hands between the agent and a person.

- take_control / pause: the agent is paused first (PauseTask closes automation's
  action gate and returns when no browser action is in flight); only then is
  USER_CONTROL (or PAUSED) committed. If the commit fails, the pause is undone.
- return_control / resume: AI_CONTROL is committed first; from USER_CONTROL the
  agent's resume then waits for the control fence (control_fence.py: every edge
  holding viewers confirmed its input gates closed); then ResumeTask. When the
  agent is done, FINISHED is committed instead; the fence and ResumeTask still
  run, as automation's Act (an external agent) drives a finished task's browser.
Control changes of one session run one at a time in this process, pause and
resume included, so the resume of one cannot land after the pause of the next.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime

from baton.automation.v1 import automation_pb2
from services.runtime.errors import BatonError, FailedPrecondition, InvalidArgument, NotFound
from services.runtime.user_ids import share_id_of
from services.session import codec, failure_reasons, state_machine
from services.session.auto_return import AUTO_RETURN, AutoReturns, check_conditions
from services.session.control_fence import ControlFence
from services.session.model import Action, Actor, AutoReturn, ControlState, Session, TaskStatus
from services.session.records import SessionRecords
from services.session.settings import SessionSettings
from services.session.workers import WorkerDirectory, WorkerHost, placed_host

log = logging.getLogger(__name__)

# The hand-back report's reason when a person (or an operator) returned control.
RETURNED_BY_PERSON = "return_control"

# How often a pause is asked again while our StartTask has not reached automation.
PAUSE_RETRY_S = 0.02


class Handoff:
    def __init__(
        self,
        records: SessionRecords,
        directory: WorkerDirectory,
        fence: ControlFence,
        settings: SessionSettings,
        task_in_flight: Callable[[str], bool],
        fail_host_lost: Callable[[str], Awaitable[object]],
    ) -> None:
        self._records = records
        self._directory = directory
        self._fence = fence
        self._settings = settings
        self._task_in_flight = task_in_flight
        self._fail_host_lost = fail_host_lost
        self._locks: dict[str, asyncio.Lock] = {}
        # Takeovers with auto-return conditions, watched by this replica.
        self.auto_returns = AutoReturns(records, directory, self._auto_return)

    def forget(self, session_id: str) -> None:
        self._locks.pop(session_id, None)
        self.auto_returns.forget(session_id)

    async def _auto_return(self, session_id: str, holder: str, condition: str) -> None:
        """Return control for `holder` as their Return Control would, because `condition` held."""
        # A share's guest acts through their share, as on their own click.
        actor = Actor(holder, share_id=share_id_of(holder))
        await self.change(actor, session_id, Action.RETURN_CONTROL, None, because=condition)

    async def change(
        self,
        actor: Actor,
        session_id: str,
        action: Action,
        expected_version: int | None,
        to_user_id: str = "",
        auto_return: AutoReturn | None = None,
        because: str = "",
    ) -> Session:
        """Apply a control action other than END, with the agent paused or resumed
        (a hand_over between people leaves the agent paused as it is). A
        take_control's `auto_return` conditions are watched (auto_return.py); a
        return_control `because` one held says so (reason auto_return)."""
        lock = self._locks.setdefault(session_id, asyncio.Lock())
        async with lock:
            changed = await self._change(
                actor, session_id, action, expected_version, to_user_id, auto_return, because
            )
        if changed.auto_return is not None and changed.state is ControlState.USER_CONTROL:
            self.auto_returns.watch(changed)
        elif not because:
            self.auto_returns.forget(session_id)
        return changed

    async def acknowledge(self, session_id: str, edge_id: str, version: int) -> None:
        """`edge_id` has applied `version` (or newer) of the session to its input gates."""
        await self._fence.acknowledge(session_id, edge_id, version)

    async def _change(
        self,
        actor: Actor,
        session_id: str,
        action: Action,
        expected_version: int | None,
        to_user_id: str,
        auto_return: AutoReturn | None,
        because: str,
    ) -> Session:
        session = (await self._records.get_owned(actor, session_id)).session
        # Refuse before touching automation when the action is not allowed.
        state_machine.check_version(session, expected_version)
        if state_machine.is_noop(session, action, actor):
            return session
        state_machine.next_state(session, action, actor)
        host = await self._host_of(session)
        leaving_user = session.state is ControlState.USER_CONTROL
        pausing = action in (Action.TAKE_CONTROL, Action.PAUSE)
        now = self._records.clock()
        # The video holds its last frame while a person has control, when asked.
        hiding = action is Action.TAKE_CONTROL and session.pause_recording_during_takeover
        if action is Action.TAKE_CONTROL and auto_return is None:
            # The agent's request_user step may have set them for this takeover.
            auto_return = await self._requested_conditions(host, session)
        elif auto_return is not None and auto_return.selector_appears and host is not None:
            # A selector that is not one is refused before anything changes.
            await host.automation.probe_page(session.id, auto_return.selector_appears)
        handback = None
        if action is Action.RETURN_CONTROL and leaving_user:
            handback = await self._take_handback(host, session, actor, now, because)
        reason = f"{AUTO_RETURN}: {because}" if because else ""

        def change(s: Session) -> Session:
            changed = state_machine.apply(
                s, action, actor, now, expected_version, reason=reason, to_user_id=to_user_id
            )
            # Conditions last as long as the takeover that set them.
            held = auto_return if action is Action.TAKE_CONTROL else changed.auto_return
            if changed.state is not ControlState.USER_CONTROL or action is Action.HAND_OVER:
                held = None
            changed = replace(changed, auto_return=held)
            return changed if handback is None else replace(changed, handback=handback)

        try:
            if pausing:
                # Control changes hands only once the agent has stopped acting.
                await self._pause_agent(host, session)
            if hiding:
                # Before the person can act: nothing of theirs is grabbed.
                await self._pause_recording(host, session, True)
            # The step the pause interrupts reports meanwhile and moves the version
            # on; only a change of control since makes `expected_version` stale
            # (state_machine.check_version).
            changed = await self._records.update(session_id, change)
        except BaseException:
            if hiding:
                await self._pause_recording(host, session, False)
            if pausing:
                # The change did not happen (control changed meanwhile, ...): an
                # agent still in control must not stay paused.
                await self._undo_pause(host, session_id)
            raise
        if action in (Action.RETURN_CONTROL, Action.RESUME):
            if leaving_user:
                await self._wait_for_gates(changed)
                if changed.pause_recording_during_takeover:
                    # After the gates closed: no input of the person's is grabbed.
                    await self._pause_recording(host, changed, False)
            await self._resume_agent(host, changed)
        return changed

    async def _requested_conditions(
        self, host: WorkerHost | None, session: Session
    ) -> AutoReturn | None:
        """A waiting request_user step's conditions; a selector the page rejects is
        left out (the person's takeover is never refused for the agent's mistake)."""
        conditions = session.user_request_auto_return
        if conditions is None or session.task.status is not TaskStatus.WAITING_FOR_USER:
            return None
        try:
            check_conditions(conditions)
        except InvalidArgument as exc:
            log.warning("session %s: request_user's conditions left out: %s", session.id, exc)
            return None
        if conditions.selector_appears and host is not None:
            try:
                await host.automation.probe_page(session.id, conditions.selector_appears)
            except InvalidArgument as exc:
                log.warning("session %s: request_user's selector left out: %s", session.id, exc)
                conditions = replace(conditions, selector_appears="")
        if not (conditions.url_matches or conditions.selector_appears or conditions.idle_seconds):
            return None
        return conditions

    async def _pause_recording(
        self, host: WorkerHost | None, session: Session, paused: bool
    ) -> None:
        """Hold (or go on with) the session's recording; a failure to hold it
        refuses the takeover (its promise is that nothing of the person is in it)."""
        if host is None or session.placement is None or session.recording is None:
            return
        try:
            await host.display.pause_recording(session.placement.slot_id, paused)
        except BatonError as exc:
            if paused:
                raise FailedPrecondition(
                    f"the recording could not be paused for the takeover: {exc.message}"
                ) from None
            log.warning("session %s: the recording did not go on: %s", session.id, exc.message)

    async def _take_handback(
        self,
        host: WorkerHost | None,
        session: Session,
        actor: Actor,
        now: datetime,
        because: str = "",
    ) -> automation_pb2.Handback | None:
        """What the person did, from automation, which watched the page meanwhile
        (services/automation/README.md, "The hand-back report"). A report that
        cannot be had never holds control back: the return goes on without one."""
        if host is None:
            return None
        try:
            report = await host.automation.take_handback(session.id)
        except BatonError as exc:
            log.info("session %s: no hand-back report: %s", session.id, exc.message)
            return None
        report.returned_by = actor.user_id
        report.returned_at.CopyFrom(codec.timestamp(now))
        report.reason = AUTO_RETURN if because else RETURNED_BY_PERSON
        report.condition = because
        return report

    async def _host_of(self, session: Session) -> WorkerHost | None:
        """The session's host; a lost one fails the session and refuses the change."""
        placement = session.placement
        if placement is None:
            return None
        host = placed_host(self._directory, placement.host_id, placement.host_epoch)
        if host is None:
            await self._fail_host_lost(session.id)
            raise FailedPrecondition(f"session {session.id} failed: {failure_reasons.HOST_LOST}")
        return host

    async def _wait_for_gates(self, changed: Session) -> None:
        # The fence: no agent action before every edge's gates are closed
        # (services/session/README.md, "The handoff fence").
        timeout = self._settings.control_fence_timeout_s
        late = await self._fence.wait(changed.id, changed.version, timeout)
        if late:
            log.warning(
                "session %s: edges %s did not confirm their input gates closed "
                "within %g s; their viewers are treated as gone",
                changed.id,
                ", ".join(late),
                timeout,
            )

    async def _pause_agent(self, host: WorkerHost | None, session: Session) -> None:
        # Whatever the task's status: a finished task's browser still takes Act
        # calls, and automation's action gate is what refuses them.
        if host is None:
            return  # never placed: no browser, no agent
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.start_timeout_s
        while True:
            try:
                await host.automation.pause_task(session.id)
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

    async def _undo_pause(self, host: WorkerHost | None, session_id: str) -> None:
        try:
            stored = await self._records.get(session_id)
            if stored is not None and stored.session.state is ControlState.AI_CONTROL:
                await self._resume_agent(host, stored.session)
        except BatonError as exc:
            # The original failure is what the caller hears about.
            log.warning("session %s: undoing a pause failed: %s", session_id, exc.message)

    async def _resume_agent(self, host: WorkerHost | None, session: Session) -> None:
        if host is None:
            return
        try:
            await host.automation.resume_task(session.id)
        except BatonError as exc:
            if not session.task.status.active:
                # No agent left to resume (its browser may be gone): nothing lost.
                log.info("session %s: reopening the action gate: %s", session.id, exc.message)
                return
            log.warning("session %s: resume failed: %s", session.id, exc.message)
            await self._records.record_error(
                session.id, f"the agent could not resume: {exc.message}"
            )
