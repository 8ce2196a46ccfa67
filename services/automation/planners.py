"""Planners decide the next step of a task. One interface, three kinds.

- StepsPlanner: the explicit list from the request.
- LlmPlanner (llm_planner.py): asks an OpenAI-compatible model.
- NoPlanner: nothing to do; the session is left to the person.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Protocol

from services.automation.page_port import BrowserPage, Observation
from services.automation.steps import Fill, Step, looks_like_password_selector


class OutcomeKind(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # A pause outlived the grace period and aborted the action: not done.
    ABORTED = "aborted"


@dataclass(frozen=True)
class StepOutcome:
    kind: OutcomeKind
    result: str = ""
    error: str = ""


@dataclass(frozen=True)
class Finish:
    """The planner is done."""

    succeeded: bool
    reason: str
    # A step event tells the viewers, for planners that did nothing themselves.
    announce: bool = False


class Planner(Protocol):
    # Whether next_step needs the ARIA snapshot (it costs a round trip).
    needs_aria: bool
    # Whether a CAPTCHA (and, when the task asks, an empty password field the
    # planner will not fill: TaskSpec.hand_over_on_password_field) stops it for a person.
    stops_for_blockers: bool

    async def next_step(self, observation: Observation) -> Step | Finish: ...

    def record(self, step: Step, outcome: StepOutcome) -> None:
        """What became of the step that next_step returned."""
        ...

    async def has_password_for(self, page: BrowserPage) -> bool:
        """Whether the planner will fill the empty password field on the page."""
        ...


class StepsPlanner:
    needs_aria = False
    stops_for_blockers = True

    def __init__(self, steps: list[Step]) -> None:
        self._steps = steps
        self._next = 0

    async def next_step(self, observation: Observation) -> Step | Finish:
        if self._next >= len(self._steps):
            return Finish(succeeded=True, reason="all steps done")
        return self._steps[self._next]

    def record(self, step: Step, outcome: StepOutcome) -> None:
        # An aborted step is run again after the resume.
        if outcome.kind is not OutcomeKind.ABORTED:
            self._next += 1

    async def has_password_for(self, page: BrowserPage) -> bool:
        for step in self._steps[self._next :]:
            if isinstance(step.action, Fill) and step.action.value:
                if looks_like_password_selector(step.action.selector):
                    return True
                if await page.is_secret_field(step.action.selector):
                    return True
        return False


NO_PLANNER_MESSAGE = (
    "no planner is configured and the task has no steps: "
    "the page is open and the session is left to the person"
)


class NoPlanner:
    needs_aria = False
    # It does nothing on the page: the person has it anyway.
    stops_for_blockers = False

    async def next_step(self, observation: Observation) -> Step | Finish:
        return Finish(succeeded=True, reason=NO_PLANNER_MESSAGE, announce=True)

    def record(self, step: Step, outcome: StepOutcome) -> None:
        pass

    async def has_password_for(self, page: BrowserPage) -> bool:
        return False


class ExternalAgent:
    """The session's agent is an external CDP client (cdp_gate.py): the task
    opened the URL and waits, RUNNING, without acting or handing over, until it
    is cancelled (the session ends)."""

    needs_aria = False
    stops_for_blockers = False

    async def next_step(self, observation: Observation) -> Step | Finish:
        await asyncio.Event().wait()
        raise AssertionError("unreachable: only cancellation ends the wait")

    def record(self, step: Step, outcome: StepOutcome) -> None:
        pass

    async def has_password_for(self, page: BrowserPage) -> bool:
        return False
