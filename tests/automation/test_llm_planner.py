"""LlmPlanner: tool calls become steps; outcomes and observations go back to the model."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.automation.llm_planner import (
    LlmError,
    LlmPlanner,
    ToolCallError,
    action_from_tool_call,
    tool_definitions,
)
from services.automation.page_port import Observation
from services.automation.planners import Finish, OutcomeKind, StepOutcome
from services.automation.steps import ACTION_NAMES, Click, Fill, Scroll, Step
from tests.automation.scripted_llm import tool_call_answer

PAGE = Observation("http://site/", "Site", '- button "Go"')


class ScriptedClient:
    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.bodies: list[dict[str, Any]] = []

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        # The planner keeps appending to its list: keep a copy of what was sent.
        self.bodies.append(json.loads(json.dumps(body)))
        return self.answers.pop(0)


def text_answer(content: str) -> dict[str, Any]:
    return {"choices": [{"message": {"role": "assistant", "content": content}}]}


def test_every_action_has_a_tool() -> None:
    names = {tool["function"]["name"] for tool in tool_definitions()}
    assert names == set(ACTION_NAMES.values()) | {"finish"}


def test_tool_calls_become_actions_and_bad_ones_are_refused() -> None:
    assert action_from_tool_call("click", {"selector": "#a"}) == Click("#a")
    assert action_from_tool_call("scroll", {"dx": 0, "dy": 300.0}) == Scroll(0, 300)
    with pytest.raises(ToolCallError):
        action_from_tool_call("click", {"selector": 3})
    with pytest.raises(ToolCallError):
        action_from_tool_call("launch_missiles", {})
    with pytest.raises(ToolCallError, match="only http and https"):
        action_from_tool_call("goto", {"url": "file:///etc/passwd"})


async def test_the_model_sees_the_page_and_each_outcome() -> None:
    client = ScriptedClient(
        [
            tool_call_answer("c1", "fill", {"selector": "#q", "value": "cats"}),
            tool_call_answer("c2", "finish", {"success": True, "answer": "found cats"}),
        ]
    )
    planner = LlmPlanner(client, "m", "search cats")
    step = await planner.next_step(PAGE)
    assert step == Step(Fill("#q", "cats"))
    planner.record(step, StepOutcome(OutcomeKind.SUCCEEDED))
    finish = await planner.next_step(PAGE)
    assert finish == Finish(succeeded=True, reason="found cats")

    first, second = client.bodies
    assert first["model"] == "m"
    assert first["messages"][1] == {"role": "user", "content": "Task: search cats"}
    assert 'button "Go"' in first["messages"][-1]["content"]
    assert second["messages"][-2] == {"role": "tool", "tool_call_id": "c1", "content": "succeeded"}


async def test_a_plain_answer_finishes_the_task() -> None:
    planner = LlmPlanner(ScriptedClient([text_answer("nothing to do")]), "m", "t")
    assert await planner.next_step(PAGE) == Finish(succeeded=True, reason="nothing to do")


async def test_repeated_unusable_answers_fail() -> None:
    bad = tool_call_answer("c", "fly", {})
    planner = LlmPlanner(ScriptedClient([bad, bad, bad]), "m", "t")
    with pytest.raises(LlmError):
        await planner.next_step(PAGE)


async def test_an_aborted_step_drops_the_rest_of_the_answer() -> None:
    answer = tool_call_answer("c1", "click", {"selector": "#a"})
    answer["choices"][0]["message"]["tool_calls"].append(
        {"id": "c2", "type": "function", "function": {"name": "click", "arguments": "{}"}}
    )
    answer["choices"][0]["message"]["tool_calls"][1]["function"]["arguments"] = json.dumps(
        {"selector": "#b"}
    )
    client = ScriptedClient([answer, text_answer("done")])
    planner = LlmPlanner(client, "m", "t")
    step = await planner.next_step(PAGE)
    assert step == Step(Click("#a"))
    planner.record(step, StepOutcome(OutcomeKind.ABORTED))
    # #b is not run: the model is asked again with the fresh page.
    assert await planner.next_step(PAGE) == Finish(succeeded=True, reason="done")
    replies = [m for m in client.bodies[1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in replies] == ["c1", "c2"]
    assert replies[0]["content"].startswith("aborted")
