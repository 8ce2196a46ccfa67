"""StepRunner: runs one task step by step and reports every step.

Every browser call goes through the session's ActionGate, so a pause stops the
task between two calls (or aborts the call in flight after the grace period).
After any pause or hand-over the page is observed again before the planner
decides, since the person may have changed it. Events go to `emit` in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from baton.automation.v1.automation_pb2 import AutoReturn
from services.automation.action_gate import ActionAborted, ActionGate, GateClosed
from services.automation.handback import HandbackReport, describe_handback
from services.automation.llm_planner import LlmError
from services.automation.page_port import (
    BROWSER_GONE_MESSAGE,
    ActionFailed,
    BrowserGone,
    BrowserPage,
    Observation,
    describe_on_page,
)
from services.automation.planners import Finish, OutcomeKind, Planner, StepOutcome
from services.automation.steps import (
    Goto,
    RequestUser,
    StatusChanged,
    Step,
    StepEvent,
    StepStatus,
    TaskEvent,
    TaskStatus,
    UserRequested,
    action_name,
    describe,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
EventSink = Callable[[TaskEvent], None]
# Awaited when the browser is found gone, before the task reports FAILED.
GoneHandler = Callable[[], Awaitable[None]]

ABORTED_BY_PAUSE = "aborted: a pause outlived the grace period; the step runs again on resume"


@dataclass(frozen=True)
class TaskSpec:
    session_id: str
    task_text: str
    url: str
    max_steps: int
    action_timeout_ms: int
    # Stop for a person at an empty password field the planner will not fill
    # (browser_sessions.hand_over_on_password_field decides the default).
    hand_over_on_password_field: bool = False


class StepRunner:
    def __init__(
        self,
        spec: TaskSpec,
        planner: Planner,
        page: BrowserPage,
        gate: ActionGate,
        emit: EventSink,
        on_browser_gone: GoneHandler,
    ) -> None:
        self._spec = spec
        self._planner = planner
        self._page = page
        self._gate = gate
        self._emit = emit
        self._on_browser_gone = on_browser_gone
        self.status = TaskStatus.PENDING
        self.steps_completed = 0
        # Step 0 is opening the task's URL; the planner's steps count from 1.
        self._next_index = 1
        self._steps_taken = 0
        # Blockers already handed to a person, by (kind, url): not asked twice.
        self._handed_over: set[tuple[str, str]] = set()
        self._fresh_look = False
        # What a person did in the takeover that just ended, for the next observation.
        self._handback = ""

    @property
    def finished(self) -> bool:
        return self.status.finished

    def _set_status(self, status: TaskStatus, reason: str = "") -> None:
        if self.status.finished or (status is self.status and not reason):
            return
        self.status = status
        log.info("task %s: %s %s", self._spec.session_id, status.value, reason)
        self._emit(StatusChanged(status, reason, self.steps_completed))

    def handed_back(self, report: HandbackReport) -> None:
        """A person returned control: the step stream hears what they did at once,
        the planner with its next observation (services/automation/README.md,
        "The hand-back report")."""
        if self.finished:
            return
        self._handback = describe_handback(report)
        self._emit(
            StepEvent(
                index=self._next_index,
                action="handback",
                status=StepStatus.SUCCEEDED,
                description=self._handback,
                url=report.url_after,
                handback=report,
            )
        )

    def end(self, status: TaskStatus, reason: str) -> None:
        """Report the task's final status (once; later calls do nothing)."""
        self._set_status(status, reason)

    async def run(self) -> None:
        self._set_status(TaskStatus.RUNNING)
        try:
            status, reason = await self._run()
        except BrowserGone:
            await self._on_browser_gone()
            status, reason = TaskStatus.FAILED, BROWSER_GONE_MESSAGE
        except LlmError as error:
            status, reason = TaskStatus.FAILED, f"the LLM planner failed: {error}"
        except Exception:
            # The stream must still end: a bug fails the task, not the service.
            log.exception("task %s failed unexpectedly", self._spec.session_id)
            status, reason = TaskStatus.FAILED, "internal error in the automation service"
        self.end(status, reason)

    async def _run(self) -> tuple[TaskStatus, str]:
        if self._spec.url:
            outcome = await self._open_start_page()
            if outcome.kind is OutcomeKind.FAILED:
                return TaskStatus.FAILED, f"could not open {self._spec.url}: {outcome.error}"
        while True:
            await self._wait_until_open()
            try:
                observation = await self._gated(self._look)
            except (GateClosed, ActionAborted):
                continue
            if isinstance(observation, str):
                await self._ask_person(observation)
                continue
            move = await self._planner.next_step(observation)
            if isinstance(move, Finish):
                if move.announce:
                    self._announce(move.reason)
                status = TaskStatus.COMPLETED if move.succeeded else TaskStatus.FAILED
                return status, move.reason
            if self._steps_taken >= self._spec.max_steps:
                return TaskStatus.FAILED, (
                    f"stopped after maxSteps={self._spec.max_steps} steps: the task was not "
                    f"finished (next step would have been: {describe(move.action)})"
                )
            index = self._next_index
            outcome = await self._step(move, index)
            self._planner.record(move, outcome)
            if outcome.kind is OutcomeKind.ABORTED:
                continue
            self._next_index += 1
            self._steps_taken += 1
            if outcome.kind is OutcomeKind.FAILED and not move.allow_failure:
                return TaskStatus.FAILED, (
                    f"step {index} ({describe(move.action)}) failed: {outcome.error}"
                )

    async def _open_start_page(self) -> StepOutcome:
        step = Step(Goto(self._spec.url))
        while True:
            await self._wait_until_open()
            outcome = await self._step(step, 0)
            if outcome.kind is not OutcomeKind.ABORTED:
                return outcome

    async def _wait_until_open(self) -> None:
        if not self._gate.paused:
            return
        await self._wait_open_or_gone()
        # The person may have changed the page: observe it afresh.
        self._fresh_look = True

    async def _wait_open_or_gone(self) -> None:
        opened = asyncio.ensure_future(self._gate.wait_open())
        gone = asyncio.ensure_future(self._page.gone.wait())
        try:
            await asyncio.wait({opened, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
            gone.cancel()
        if self._page.gone.is_set():
            raise BrowserGone(BROWSER_GONE_MESSAGE)

    async def _gated(self, call: Callable[[], Awaitable[T]]) -> T:
        if self._page.gone.is_set():
            raise BrowserGone(BROWSER_GONE_MESSAGE)
        return await self._gate.run(call)

    async def _look(self) -> Observation | str:
        """Observe the page, or say why a person is needed first."""
        with_aria = self._planner.needs_aria or self._fresh_look
        observation = await self._page.observe(with_aria=with_aria)
        if self._handback:
            observation = replace(observation, handback=self._handback)
            self._handback = ""
        if self._fresh_look:
            log.info(
                "task %s: re-observed %s after a pause", self._spec.session_id, observation.url
            )
            self._fresh_look = False
        if not self._planner.stops_for_blockers:
            return observation
        reason = await self._blocker(observation.url)
        return observation if reason is None else reason

    async def _blocker(self, url: str) -> str | None:
        scan = await self._page.scan()
        if scan.captcha is not None and ("captcha", url) not in self._handed_over:
            self._handed_over.add(("captcha", url))
            return f"a {scan.captcha} CAPTCHA is on the page: please solve it"
        if (
            self._spec.hand_over_on_password_field
            and scan.empty_password_fields
            and ("password", url) not in self._handed_over
            and not await self._planner.has_password_for(self._page)
        ):
            self._handed_over.add(("password", url))
            return "the page asks for a password the agent does not have: please sign in"
        return None

    async def _ask_person(self, reason: str, auto_return: AutoReturn | None = None) -> None:
        self._emit(UserRequested(reason=reason, url=self._page.url, auto_return=auto_return))
        self._set_status(TaskStatus.WAITING_FOR_USER, reason)
        # The task holds itself paused until ResumeTask (control came back).
        await self._gate.pause()
        await self._wait_open_or_gone()
        self._fresh_look = True
        self._set_status(TaskStatus.RUNNING)

    def _announce(self, message: str) -> None:
        self._emit(
            StepEvent(
                index=self._next_index,
                action="none",
                status=StepStatus.SUCCEEDED,
                description=message,
                url=self._page.url,
            )
        )

    def _event(
        self,
        index: int,
        step: Step,
        status: StepStatus,
        description: str,
        started: float,
        error: str = "",
        result: str = "",
    ) -> StepEvent:
        return StepEvent(
            index=index,
            action=action_name(step.action),
            status=status,
            description=description,
            url=self._page.url,
            duration_ms=0 if status is StepStatus.STARTED else _ms_since(started),
            error=error,
            result=result,
        )

    async def _step(self, step: Step, index: int) -> StepOutcome:
        """Run one step through the gate: ABORTED when a pause kept it from finishing."""
        if isinstance(step.action, RequestUser):
            return await self._request_user_step(step, index)
        started = time.monotonic()
        description = describe(step.action)
        began = False

        async def act() -> StepOutcome:
            nonlocal description, began, started
            description = await describe_on_page(self._page, step.action)
            started = time.monotonic()
            began = True
            self._emit(self._event(index, step, StepStatus.STARTED, description, started))
            timeout = step.timeout_ms or self._spec.action_timeout_ms
            try:
                result = await self._page.perform(step.action, timeout)
            except ActionFailed as error:
                message = str(error)
                self._emit(
                    self._event(index, step, StepStatus.FAILED, description, started, error=message)
                )
                log.info("task %s: step %d failed: %s", self._spec.session_id, index, message)
                return StepOutcome(OutcomeKind.FAILED, error=message)
            except BrowserGone:
                self._emit(
                    self._event(
                        index,
                        step,
                        StepStatus.FAILED,
                        description,
                        started,
                        error=BROWSER_GONE_MESSAGE,
                    )
                )
                raise
            self.steps_completed += 1
            self._emit(
                self._event(index, step, StepStatus.SUCCEEDED, description, started, result=result)
            )
            return StepOutcome(OutcomeKind.SUCCEEDED, result=result)

        try:
            return await self._gated(act)
        except GateClosed:
            return StepOutcome(OutcomeKind.ABORTED)
        except ActionAborted:
            if began:
                self._emit(
                    self._event(
                        index,
                        step,
                        StepStatus.INTERRUPTED,
                        description,
                        started,
                        error=ABORTED_BY_PAUSE,
                    )
                )
            return StepOutcome(OutcomeKind.ABORTED, error=ABORTED_BY_PAUSE)

    async def _request_user_step(self, step: Step, index: int) -> StepOutcome:
        assert isinstance(step.action, RequestUser)
        started = time.monotonic()
        description = describe(step.action)
        self._emit(self._event(index, step, StepStatus.STARTED, description, started))
        await self._ask_person(step.action.reason, step.action.auto_return)
        self.steps_completed += 1
        self._emit(self._event(index, step, StepStatus.SUCCEEDED, description, started))
        return StepOutcome(OutcomeKind.SUCCEEDED)


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
