"""StepRunner against the in-memory browser: order, failures, limits, hand-overs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from services.automation.action_gate import ActionGate
from services.automation.browser_sessions import PlannerChoice, hand_over_on_password_field
from services.automation.page_port import BROWSER_GONE_MESSAGE, Observation, PageScan
from services.automation.planners import (
    NO_PLANNER_MESSAGE,
    Finish,
    NoPlanner,
    Planner,
    StepsPlanner,
)
from services.automation.steps import (
    Click,
    Extract,
    Fill,
    Goto,
    RequestUser,
    StatusChanged,
    Step,
    StepEvent,
    StepStatus,
    TaskEvent,
    TaskStatus,
    Type,
    UserRequested,
)
from services.automation.task_runner import StepRunner, TaskSpec
from tests.automation.fake_browser import FakeBrowser
from tests.conftest import eventually


class Harness:
    def __init__(
        self,
        planner: Planner,
        max_steps: int = 10,
        url: str = "http://site/",
        grace_s: float = 1,
        on_password_field: bool = False,
    ) -> None:
        self.browser = FakeBrowser()
        self.gate = ActionGate(grace_s)
        self.events: list[TaskEvent] = []
        self.gone_handled = False
        spec = TaskSpec(
            "s1",
            "task",
            url,
            max_steps,
            action_timeout_ms=1000,
            hand_over_on_password_field=on_password_field,
        )
        self.runner = StepRunner(
            spec, planner, self.browser, self.gate, self.events.append, self._on_gone
        )

    async def _on_gone(self) -> None:
        self.gone_handled = True

    def steps(self) -> list[StepEvent]:
        return [e for e in self.events if isinstance(e, StepEvent)]

    def statuses(self) -> list[tuple[TaskStatus, str]]:
        return [(e.status, e.reason) for e in self.events if isinstance(e, StatusChanged)]

    async def until(self, predicate: Callable[[], bool]) -> None:
        await eventually(predicate)


def steps(*actions: object, **options: object) -> StepsPlanner:
    return StepsPlanner([Step(action, **options) for action in actions])  # type: ignore[arg-type]


async def test_steps_run_in_order_with_started_and_succeeded_events() -> None:
    harness = Harness(steps(Click("#a"), Extract("#b")))
    await harness.runner.run()

    assert [(s.index, s.action, s.status) for s in harness.steps()] == [
        (0, "goto", StepStatus.STARTED),
        (0, "goto", StepStatus.SUCCEEDED),
        (1, "click", StepStatus.STARTED),
        (1, "click", StepStatus.SUCCEEDED),
        (2, "extract", StepStatus.STARTED),
        (2, "extract", StepStatus.SUCCEEDED),
    ]
    assert harness.steps()[-1].result == "text of #b"
    assert harness.statuses() == [
        (TaskStatus.RUNNING, ""),
        (TaskStatus.COMPLETED, "all steps done"),
    ]
    assert harness.browser.performed == [Goto("http://site/"), Click("#a"), Extract("#b")]


async def test_a_failed_step_fails_the_task_with_a_clear_reason() -> None:
    harness = Harness(steps(Click("#missing"), Click("#after")))
    harness.browser.missing.add("#missing")
    await harness.runner.run()

    failed = harness.steps()[-1]
    assert (failed.index, failed.status) == (1, StepStatus.FAILED)
    assert "#missing not found" in failed.error
    status, reason = harness.statuses()[-1]
    assert status is TaskStatus.FAILED
    assert reason.startswith("step 1 (click #missing) failed: ")
    assert Click("#after") not in harness.browser.performed


async def test_allow_failure_lets_the_task_go_on() -> None:
    planner = StepsPlanner([Step(Click("#missing"), allow_failure=True), Step(Click("#after"))])
    harness = Harness(planner)
    harness.browser.missing.add("#missing")
    await harness.runner.run()
    assert harness.statuses()[-1][0] is TaskStatus.COMPLETED
    assert Click("#after") in harness.browser.performed


async def test_a_start_page_that_cannot_open_fails_the_task() -> None:
    harness = Harness(steps(Click("#a")), url="http://down/")
    harness.browser.missing.add(None)  # type: ignore[arg-type]
    await harness.runner.run()
    status, reason = harness.statuses()[-1]
    assert status is TaskStatus.FAILED
    assert reason.startswith("could not open http://down/")


async def test_max_steps_stops_the_task() -> None:
    harness = Harness(steps(Click("#1"), Click("#2"), Click("#3")), max_steps=2)
    await harness.runner.run()
    status, reason = harness.statuses()[-1]
    assert status is TaskStatus.FAILED
    assert "maxSteps=2" in reason and "click #3" in reason
    assert Click("#3") not in harness.browser.performed


async def test_password_values_are_redacted_and_others_shown() -> None:
    harness = Harness(steps(Fill("#pw", "hunter2"), Fill("#user", "ada"), Type("hunter3")))
    harness.browser.password_selectors.update({"#pw", ":focus"})
    await harness.runner.run()
    descriptions = {s.description for s in harness.steps()}
    assert "fill #pw with [redacted]" in descriptions
    assert "fill #user with 'ada'" in descriptions
    assert "type [redacted]" in descriptions
    assert "hunter" not in repr(harness.events)


async def test_request_user_waits_until_resume_and_reobserves() -> None:
    harness = Harness(steps(RequestUser("approve"), Click("#next")))
    job = asyncio.ensure_future(harness.runner.run())
    await harness.until(lambda: harness.runner.status is TaskStatus.WAITING_FOR_USER)

    assert [e for e in harness.events if isinstance(e, UserRequested)] == [
        UserRequested("approve", "http://site/")
    ]
    assert harness.gate.paused
    assert Click("#next") not in harness.browser.performed
    aria_before = harness.browser.aria_observations
    harness.gate.resume()
    await job

    assert harness.statuses()[-1][0] is TaskStatus.COMPLETED
    assert harness.browser.aria_observations > aria_before  # looked again after the person
    assert Click("#next") in harness.browser.performed


async def test_a_captcha_asks_for_a_person_once() -> None:
    harness = Harness(steps(Click("#a")))
    harness.browser.scan_result = PageScan(captcha="hCaptcha", empty_password_fields=0)
    job = asyncio.ensure_future(harness.runner.run())
    await harness.until(lambda: harness.runner.status is TaskStatus.WAITING_FOR_USER)
    asked = [e for e in harness.events if isinstance(e, UserRequested)]
    assert len(asked) == 1 and "hCaptcha" in asked[0].reason
    harness.gate.resume()
    await job
    assert harness.statuses()[-1][0] is TaskStatus.COMPLETED


async def test_an_empty_password_field_is_fine_when_the_steps_fill_it() -> None:
    harness = Harness(steps(Fill("#password", "x"), Click("#go")), on_password_field=True)
    harness.browser.scan_result = PageScan(captcha=None, empty_password_fields=1)
    await harness.runner.run()
    assert not [e for e in harness.events if isinstance(e, UserRequested)]
    assert harness.statuses()[-1][0] is TaskStatus.COMPLETED


async def test_an_aborted_step_is_reported_and_runs_again_after_resume() -> None:
    harness = Harness(steps(Click("#slow")), grace_s=0.01)
    job = asyncio.ensure_future(harness.runner.run())
    await harness.until(lambda: any(s.index == 1 for s in harness.steps()))
    outcome = await harness.gate.pause()
    assert outcome.aborted_action
    await harness.until(lambda: harness.steps()[-1].status is StepStatus.INTERRUPTED)
    assert "aborted" in harness.steps()[-1].error

    harness.browser.missing.clear()
    harness.gate.resume()
    await harness.until(lambda: len([s for s in harness.steps() if s.index == 1]) == 3)
    job.cancel()
    restarted = harness.steps()[-1]
    assert (restarted.index, restarted.status) == (1, StepStatus.STARTED)


async def test_the_browser_going_away_while_waiting_fails_the_task() -> None:
    harness = Harness(steps(RequestUser("look"), Click("#a")))
    job = asyncio.ensure_future(harness.runner.run())
    await harness.until(lambda: harness.runner.status is TaskStatus.WAITING_FOR_USER)
    harness.browser.gone.set()
    await job
    assert harness.statuses()[-1] == (TaskStatus.FAILED, BROWSER_GONE_MESSAGE)
    assert harness.gone_handled


async def test_no_planner_announces_itself_and_completes() -> None:
    harness = Harness(NoPlanner())
    await harness.runner.run()
    note = harness.steps()[-1]
    assert (note.index, note.action, note.description) == (1, "none", NO_PLANNER_MESSAGE)
    assert harness.statuses()[-1] == (TaskStatus.COMPLETED, NO_PLANNER_MESSAGE)


async def test_end_reports_a_final_status_once() -> None:
    harness = Harness(steps())
    harness.runner.end(TaskStatus.CANCELLED, "cancelled on request")
    harness.runner.end(TaskStatus.FAILED, "too late")
    assert harness.statuses() == [(TaskStatus.CANCELLED, "cancelled on request")]


async def test_an_unexpected_error_still_ends_the_task() -> None:
    class BrokenPlanner(StepsPlanner):
        async def next_step(self, observation: Observation) -> Step | Finish:
            raise RuntimeError("bug")

    harness = Harness(BrokenPlanner([]))
    await harness.runner.run()
    assert harness.statuses()[-1] == (
        TaskStatus.FAILED,
        "internal error in the automation service",
    )


async def test_explicit_steps_are_not_stopped_by_an_empty_password_field() -> None:
    """Issue 13, part 2: a sign-up form's optional password field does not stop
    steps that fill the other fields (no hand-over the caller did not ask for)."""
    harness = Harness(steps(Fill("#name", "Ada"), Click("#submit")))
    harness.browser.scan_result = PageScan(captcha=None, empty_password_fields=1)
    await harness.runner.run()
    assert not [e for e in harness.events if isinstance(e, UserRequested)]
    assert harness.statuses()[-1][0] is TaskStatus.COMPLETED
    assert Click("#submit") in harness.browser.performed


async def test_an_empty_password_field_hands_over_when_the_task_asks() -> None:
    harness = Harness(steps(Fill("#name", "Ada"), Click("#submit")), on_password_field=True)
    harness.browser.scan_result = PageScan(captcha=None, empty_password_fields=1)
    job = asyncio.ensure_future(harness.runner.run())
    await harness.until(lambda: harness.runner.status is TaskStatus.WAITING_FOR_USER)
    assert harness.statuses()[-1] == (
        TaskStatus.WAITING_FOR_USER,
        "the page asks for a password the agent does not have: please sign in",
    )
    assert Fill("#name", "Ada") not in harness.browser.performed
    harness.gate.resume()
    await job
    assert harness.statuses()[-1][0] is TaskStatus.COMPLETED


def test_who_hands_over_at_a_password_field_by_default() -> None:
    assert hand_over_on_password_field(PlannerChoice.LLM, None)
    assert not hand_over_on_password_field(PlannerChoice.STEPS, None)
    assert not hand_over_on_password_field(PlannerChoice.NONE, None)
    assert hand_over_on_password_field(PlannerChoice.STEPS, True)
    assert not hand_over_on_password_field(PlannerChoice.LLM, False)
