"""The LLM planner: an OpenAI-compatible chat-completions model with tool calls.

The model sees the task, then after every step the page's URL, title and ARIA
snapshot; it answers with one tool call per action (the step actions of docs/steps.md)
and `finish` when the task is done. Works with any server speaking the
protocol: OpenAI, vLLM, Ollama (`/v1`), llama.cpp's server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from services.automation.page_port import BrowserPage, Observation
from services.automation.planners import Finish, OutcomeKind, StepOutcome
from services.automation.settings import LlmSettings
from services.automation.steps import (
    Action,
    Click,
    Extract,
    Fill,
    Goto,
    Press,
    RequestUser,
    Screenshot,
    Scroll,
    Select,
    Step,
    Type,
    UnsafeUrl,
    Wait,
    WaitFor,
    check_navigable,
)

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

MAX_REJECTED_ANSWERS = 3

SYSTEM_PROMPT = """\
You operate a web browser for a person who watches and can take over at any time.
Complete the task with the tools, one action per call. After each action you get
the outcome and the page's URL, title and ARIA snapshot (the accessibility tree).
Selectors are Playwright selectors: prefer roles and names from the snapshot, such
as role=button[name="Sign in"] or role=textbox[name="Email"]; CSS (#id) and
text=Label also work. Never guess passwords or solve CAPTCHAs: call request_user.
Call finish when the task is done, with the answer the person asked for if any."""


def _string(description: str) -> JsonObject:
    return {"type": "string", "description": description}


def _tool(name: str, description: str, properties: JsonObject) -> JsonObject:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": list(properties),
            },
        },
    }


def tool_definitions() -> list[JsonObject]:
    selector = _string("Playwright selector of the element")
    return [
        _tool("goto", "Open a URL in the current tab.", {"url": _string("absolute URL")}),
        _tool("click", "Click an element.", {"selector": selector}),
        _tool(
            "fill",
            "Replace the text of an input field.",
            {"selector": selector, "value": _string("text to put in the field")},
        ),
        _tool("type", "Type text into the focused element.", {"text": _string("text")}),
        _tool("press", "Press a key, such as Enter or Control+A.", {"key": _string("key")}),
        _tool(
            "select",
            "Choose an option of a <select> by value or label.",
            {"selector": selector, "value": _string("option value or label")},
        ),
        _tool(
            "scroll",
            "Scroll the page by pixels.",
            {"dx": {"type": "integer"}, "dy": {"type": "integer"}},
        ),
        _tool("wait", "Wait some milliseconds.", {"ms": {"type": "integer"}}),
        _tool("wait_for", "Wait until an element is visible.", {"selector": selector}),
        _tool("extract", "Read the text of an element.", {"selector": selector}),
        _tool("screenshot", "Take a screenshot.", {}),
        _tool(
            "request_user",
            "Ask the watching person to take over (login, CAPTCHA, a judgement call).",
            {"reason": _string("what the person should do")},
        ),
        _tool(
            "finish",
            "End the task.",
            {
                "success": {"type": "boolean"},
                "answer": _string("the result or why the task cannot be done"),
            },
        ),
    ]


class ToolCallError(ValueError):
    """The model called a tool that does not exist or with bad arguments."""


def _text(arguments: JsonObject, name: str) -> str:
    value = arguments.get(name)
    if not isinstance(value, str):
        raise ToolCallError(f"argument {name!r} must be a string")
    return value


def _integer(arguments: JsonObject, name: str) -> int:
    value = arguments.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolCallError(f"argument {name!r} must be an integer")
    return int(value)


def action_from_tool_call(name: str, arguments: JsonObject) -> Action:
    match name:
        case "goto":
            try:
                return Goto(check_navigable(_text(arguments, "url")))
            except UnsafeUrl as error:
                raise ToolCallError(str(error)) from None
        case "click":
            return Click(_text(arguments, "selector"))
        case "fill":
            return Fill(_text(arguments, "selector"), _text(arguments, "value"))
        case "type":
            return Type(_text(arguments, "text"))
        case "press":
            return Press(_text(arguments, "key"))
        case "select":
            return Select(_text(arguments, "selector"), _text(arguments, "value"))
        case "scroll":
            return Scroll(_integer(arguments, "dx"), _integer(arguments, "dy"))
        case "wait":
            return Wait(_integer(arguments, "ms"))
        case "wait_for":
            return WaitFor(_text(arguments, "selector"))
        case "extract":
            return Extract(_text(arguments, "selector"))
        case "screenshot":
            return Screenshot()
        case "request_user":
            return RequestUser(_text(arguments, "reason"))
    raise ToolCallError(f"unknown tool {name!r}")


def observation_message(observation: Observation) -> str:
    # After a takeover the agent first hears what the person did (handback.py).
    handback = f"{observation.handback}\n" if observation.handback else ""
    return (
        f"{handback}URL: {observation.url}\nTitle: {observation.title}\n"
        f"ARIA snapshot:\n{observation.aria_snapshot}"
    )


def outcome_message(outcome: StepOutcome) -> str:
    match outcome.kind:
        case OutcomeKind.SUCCEEDED:
            return f"succeeded: {outcome.result}" if outcome.result else "succeeded"
        case OutcomeKind.FAILED:
            return f"failed: {outcome.error}"
        case OutcomeKind.ABORTED:
            return "aborted: a person paused the task; the page may have changed since"


class LlmError(Exception):
    """The model endpoint failed or answered something unusable."""


class ChatClient(Protocol):
    async def complete(self, body: JsonObject) -> JsonObject: ...


class HttpChatClient:
    """POST /chat/completions with the standard library (run in a thread)."""

    def __init__(self, settings: LlmSettings) -> None:
        if settings.base_url is None:
            raise LlmError("no LLM endpoint configured (BATON_LLM_BASE_URL)")
        self._url = settings.base_url.rstrip("/") + "/chat/completions"
        self._api_key = settings.api_key
        self._timeout = settings.request_timeout_s

    def _post(self, body: JsonObject) -> JsonObject:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(
            self._url, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read()[:300].decode(errors="replace")
            raise LlmError(f"model endpoint answered HTTP {error.code}: {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise LlmError(f"model endpoint {self._url} failed: {error}") from None
        if not isinstance(answer, dict):
            raise LlmError("model endpoint answered something other than a JSON object")
        return answer

    async def complete(self, body: JsonObject) -> JsonObject:
        return await asyncio.to_thread(self._post, body)


@dataclass(frozen=True)
class _PendingCall:
    call_id: str
    step: Step


class LlmPlanner:
    needs_aria = True
    stops_for_blockers = True

    def __init__(self, client: ChatClient, model: str, task_text: str) -> None:
        self._client = client
        self._model = model
        self._messages: list[JsonObject] = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Task: {task_text}"},
        ]
        self._pending: deque[_PendingCall] = deque()
        self._current: _PendingCall | None = None
        self._rejected_answers = 0

    async def next_step(self, observation: Observation) -> Step | Finish:
        if self._pending:
            self._current = self._pending.popleft()
            return self._current.step
        self._messages.append({"role": "user", "content": observation_message(observation)})
        answer = await self._client.complete(
            {
                "model": self._model,
                "messages": self._messages,
                "tools": tool_definitions(),
                "tool_choice": "auto",
                "temperature": 0,
            }
        )
        try:
            message = answer["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise LlmError("model answer has no choices[0].message") from None
        self._messages.append(
            {
                "role": "assistant",
                "content": message.get("content") or "",
                **({"tool_calls": message["tool_calls"]} if message.get("tool_calls") else {}),
            }
        )
        calls = message.get("tool_calls") or []
        if not calls:
            # A plain answer without an action ends the task.
            return Finish(succeeded=True, reason=str(message.get("content") or "done"))
        finish: Finish | None = None
        for call in calls:
            call_id = str(call.get("id", ""))
            function = call.get("function") or {}
            name = str(function.get("name", ""))
            try:
                raw = function.get("arguments") or "{}"
                arguments = json.loads(raw) if isinstance(raw, str) else raw
                if not isinstance(arguments, dict):
                    raise ToolCallError("arguments must be a JSON object")
                if name == "finish":
                    finish = Finish(
                        succeeded=bool(arguments.get("success", True)),
                        reason=str(arguments.get("answer", "")),
                    )
                    self._tool_result(call_id, "ok")
                    continue
                action = action_from_tool_call(name, arguments)
            except (ToolCallError, ValueError) as error:
                self._tool_result(call_id, f"rejected: {error}")
                log.info("model called %s wrongly: %s", name, error)
                continue
            self._pending.append(_PendingCall(call_id, Step(action)))
        self._rejected_answers = 0 if self._pending or finish else self._rejected_answers
        if self._pending:
            # Actions first; a finish in the same answer is re-asked afterwards.
            self._current = self._pending.popleft()
            return self._current.step
        if finish is not None:
            return finish
        # Every call was rejected: ask again with the errors in the conversation.
        self._rejected_answers += 1
        if self._rejected_answers >= MAX_REJECTED_ANSWERS:
            raise LlmError(f"the model made {MAX_REJECTED_ANSWERS} unusable answers in a row")
        return await self.next_step(observation)

    def _tool_result(self, call_id: str, content: str) -> None:
        self._messages.append({"role": "tool", "tool_call_id": call_id, "content": content})

    def record(self, step: Step, outcome: StepOutcome) -> None:
        if self._current is not None:
            self._tool_result(self._current.call_id, outcome_message(outcome))
            self._current = None
        if outcome.kind is OutcomeKind.ABORTED:
            # Re-plan from a fresh observation instead of running stale calls.
            for pending in self._pending:
                self._tool_result(pending.call_id, "skipped: the task was paused")
            self._pending.clear()

    async def has_password_for(self, page: BrowserPage) -> bool:
        # The model is never given secrets.
        return False
