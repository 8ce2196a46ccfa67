"""The REST/Socket.IO JSON (docs/openapi.json, docs/asyncapi.yaml) <-> session protos.

Pure conversion and validation: sessions and step events to camelCase JSON,
request bodies to protos. Invalid input raises InvalidArgument (400) or
PayloadTooLarge (413) with a message a front-end developer can act on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from baton.automation.v1 import automation_pb2
from baton.display.v1 import display_pb2
from baton.session.v1 import session_pb2
from services.runtime.errors import BatonError, InvalidArgument, PayloadTooLarge
from services.runtime.handback_view import handback_json
from services.runtime.limits import (
    MAX_MAX_STEPS,
    MAX_STEPS,
    MAX_USER_ID_BYTES,
    MAX_VIEWPORT,
    MIN_VIEWPORT,
    check_create_request,
    check_text,
)
from services.runtime.session_ids import check_session_id

JsonObject = dict[str, Any]

# Absent maxSteps: 0, which lets the session service apply its configured default.
DEFAULT_MAX_STEPS = 0
VIEWPORT_WIDTH_RANGE = (MIN_VIEWPORT.width, MAX_VIEWPORT.width)
VIEWPORT_HEIGHT_RANGE = (MIN_VIEWPORT.height, MAX_VIEWPORT.height)

CONTROL_ACTIONS: dict[str, session_pb2.ControlAction.ValueType] = {
    "take_control": session_pb2.CONTROL_ACTION_TAKE_CONTROL,
    "return_control": session_pb2.CONTROL_ACTION_RETURN_CONTROL,
    "pause": session_pb2.CONTROL_ACTION_PAUSE,
    "resume": session_pb2.CONTROL_ACTION_RESUME,
    "end": session_pb2.CONTROL_ACTION_END,
    "hand_over": session_pb2.CONTROL_ACTION_HAND_OVER,
}
ACTION_NAMES = {value: name for name, value in CONTROL_ACTIONS.items()}

_CONTROLLERS: dict[session_pb2.Controller.ValueType, str | None] = {
    session_pb2.CONTROLLER_UNSPECIFIED: None,
    session_pb2.CONTROLLER_AI: "ai",
    session_pb2.CONTROLLER_USER: "user",
}


def _enum_suffix(name: str, prefix: str) -> str:
    return name.removeprefix(prefix)


def state_name(state: session_pb2.ControlState.ValueType) -> str:
    """The short name: AI_CONTROL for CONTROL_STATE_AI_CONTROL, and so on."""
    return _enum_suffix(session_pb2.ControlState.Name(state), "CONTROL_STATE_")


def task_status_name(status: automation_pb2.TaskStatus.ValueType) -> str:
    return _enum_suffix(automation_pb2.TaskStatus.Name(status), "TASK_STATUS_")


def step_status_name(status: automation_pb2.StepStatus.ValueType) -> str:
    return _enum_suffix(automation_pb2.StepStatus.Name(status), "STEP_STATUS_").lower()


def iso_timestamp(value: Timestamp) -> str | None:
    if value.seconds == 0 and value.nanos == 0:
        return None
    moment = value.ToDatetime(tzinfo=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def step_event_json(event: automation_pb2.StepEvent) -> JsonObject:
    body: JsonObject = {
        "index": event.index,
        "action": event.action,
        "status": step_status_name(event.status),
        "description": event.description,
        "url": event.url,
        "durationMs": event.duration_ms,
    }
    if event.error:
        body["error"] = event.error
    if event.result:
        body["result"] = event.result
    if event.HasField("handback"):
        body["handback"] = handback_json(event.handback)
    return body


def session_json(session: session_pb2.Session, with_steps: bool = False) -> JsonObject:
    """A session as the API shows it: its summary (`stepCount`, no steps), and its
    steps too when `with_steps` (a full view from GetSession or a watch's first
    event: docs/openapi.json's SessionSummary and Session)."""
    task = session.task
    body: JsonObject = {
        "id": session.id,
        "state": state_name(session.state),
        "controller": _CONTROLLERS.get(session.controller),
        "controllerUserId": session.controller_user_id or None,
        "version": session.version,
        "ownerUserId": session.owner_user_id,
        "task": {
            "text": task.text,
            "url": task.url,
            "maxSteps": task.max_steps,
            "status": task_status_name(task.status),
            "stepsCompleted": task.steps_completed,
        },
        "stepCount": session.step_count,
        "createdAt": iso_timestamp(session.create_time),
        "updatedAt": iso_timestamp(session.update_time),
    }
    if with_steps:
        body["steps"] = [step_event_json(event) for event in session.steps]
    if task.reason:
        body["task"]["reason"] = task.reason
    if session.ended_reason:
        body["endedReason"] = session.ended_reason
    if session.user_request_reason:
        body["userRequestReason"] = session.user_request_reason
    if session.HasField("viewport"):
        body["viewport"] = {"width": session.viewport.width, "height": session.viewport.height}
    if session.HasField("recording"):
        body["recording"] = {"startedAt": iso_timestamp(session.recording.start_time)}
    if session.HasField("auto_return"):
        conditions = session.auto_return
        body["autoReturn"] = {
            "urlMatches": conditions.url_matches or None,
            "selectorAppears": conditions.selector_appears or None,
            "idleSeconds": conditions.idle_seconds or None,
        }
    if session.HasField("handback"):
        body["handback"] = handback_json(session.handback)
    return body


def error_json(error: BatonError) -> JsonObject:
    # A message may quote the caller's input, lone surrogates included, and
    # must still encode as UTF-8.
    message = error.message.encode("utf-8", "backslashreplace").decode()
    return {"error": {"code": error.code, "message": message}}


def parse_json_object(raw: bytes, max_bytes: int) -> JsonObject:
    """A request body that must be one JSON object of at most `max_bytes`."""
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body exceeds {max_bytes} bytes")
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        # A few kilobytes of "[[[[" exhaust the decoder's recursion limit.
        raise InvalidArgument("request body is nested too deeply") from None
    if not isinstance(value, dict):
        raise InvalidArgument("request body must be a JSON object")
    return value


def _reject_unknown(body: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidArgument(f"unknown field(s) in {where}: {', '.join(unknown)}")


def _text(value: str, where: str) -> str:
    # JSON's "\ud800" escape decodes to a lone surrogate, which no protobuf
    # string field (UTF-8) accepts.
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidArgument(f"{where} must be valid Unicode text") from None
    return value


def _string(body: Mapping[str, Any], key: str, where: str, required: bool = True) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}.{key} must be a string")
    return _text(value, f"{where}.{key}")


def _integer(
    body: Mapping[str, Any],
    key: str,
    where: str,
    bounds: tuple[int, int],
    default: int | None = None,
) -> int:
    value = body.get(key)
    if value is None and default is not None:
        return default
    # JSON has one number type: 215.0 is the integer 215 (as JSON Schema says).
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    # bool is an int subclass; true is not a number of steps.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{where}.{key} must be an integer")
    low, high = bounds
    if not low <= value <= high:
        raise InvalidArgument(f"{where}.{key} must be between {low} and {high}")
    return value


def _url(value: str, where: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise InvalidArgument(f"{where} must be an http:// or https:// URL")
    return value


_Builder = Callable[[Mapping[str, Any], str], automation_pb2.Step]
_INT32 = (-(2**31), 2**31 - 1)


def _selector_step(field: str, message: type[Any]) -> _Builder:
    def build(body: Mapping[str, Any], where: str) -> automation_pb2.Step:
        selector = _string(body, "selector", where)
        if not selector:
            raise InvalidArgument(f"{where}.selector must not be empty")
        return automation_pb2.Step(**{field: message(selector=selector)})

    return build


def _selector_value_step(field: str, message: type[Any]) -> _Builder:
    def build(body: Mapping[str, Any], where: str) -> automation_pb2.Step:
        selector = _string(body, "selector", where)
        value = _string(body, "value", where)
        return automation_pb2.Step(**{field: message(selector=selector, value=value)})

    return build


_STEP_FIELDS: dict[str, set[str]] = {
    "goto": {"url"},
    "click": {"selector"},
    "fill": {"selector", "value"},
    "type": {"text"},
    "press": {"key"},
    "select": {"selector", "value"},
    "scroll": {"dx", "dy"},
    "wait": {"ms"},
    "wait_for": {"selector"},
    "extract": {"selector"},
    "screenshot": set(),
    "request_user": {"reason", "autoReturn"},
}

_STEP_BUILDERS: dict[str, _Builder] = {
    "goto": lambda body, where: automation_pb2.Step(
        goto=automation_pb2.GotoAction(url=_url(_string(body, "url", where), f"{where}.url"))
    ),
    "click": _selector_step("click", automation_pb2.ClickAction),
    "fill": _selector_value_step("fill", automation_pb2.FillAction),
    "type": lambda body, where: automation_pb2.Step(
        type=automation_pb2.TypeAction(text=_string(body, "text", where))
    ),
    "press": lambda body, where: automation_pb2.Step(
        press=automation_pb2.PressAction(key=_string(body, "key", where))
    ),
    "select": _selector_value_step("select", automation_pb2.SelectAction),
    "scroll": lambda body, where: automation_pb2.Step(
        scroll=automation_pb2.ScrollAction(
            dx=_integer(body, "dx", where, _INT32, default=0),
            dy=_integer(body, "dy", where, _INT32, default=0),
        )
    ),
    "wait": lambda body, where: automation_pb2.Step(
        wait=automation_pb2.WaitAction(ms=_integer(body, "ms", where, (0, 600_000)))
    ),
    "wait_for": _selector_step("wait_for", automation_pb2.WaitForAction),
    "extract": _selector_step("extract", automation_pb2.ExtractAction),
    "screenshot": lambda body, where: automation_pb2.Step(
        screenshot=automation_pb2.ScreenshotAction()
    ),
    "request_user": lambda body, where: automation_pb2.Step(
        request_user=automation_pb2.RequestUserAction(
            reason=_string(body, "reason", where, required=False),
            auto_return=None
            if body.get("autoReturn") is None
            else parse_auto_return(body["autoReturn"], f"{where}.autoReturn"),
        )
    ),
}


def parse_step(body: Any, where: str) -> automation_pb2.Step:
    """One explicit step, such as {"action": "goto", "url": "https://..."}."""
    if not isinstance(body, dict):
        raise InvalidArgument(f"{where} must be an object")
    action = body.get("action")
    if not isinstance(action, str) or action not in _STEP_BUILDERS:
        raise InvalidArgument(
            f"{where}.action must be one of {', '.join(_STEP_BUILDERS)}, not {action!r}"
        )
    _reject_unknown(body, {"action", "allowFailure", "timeoutMs", *_STEP_FIELDS[action]}, where)
    step = _STEP_BUILDERS[action](body, where)
    allow_failure = body.get("allowFailure", False)
    if not isinstance(allow_failure, bool):
        raise InvalidArgument(f"{where}.allowFailure must be a boolean")
    step.allow_failure = allow_failure
    step.timeout_ms = _integer(body, "timeoutMs", where, (0, 600_000), default=0)
    return step


# Who drives the session's browser: Baton's own agent, or a CDP client.
AGENTS = frozenset({"builtin", "external"})


def parse_create_session(body: Mapping[str, Any]) -> session_pb2.CreateSessionRequest:
    """POST /api/browser-session (and session:create): the request, without the actor."""
    where = "body"
    known = {
        "task",
        "url",
        "maxSteps",
        "steps",
        "viewport",
        "handOver",
        "agent",
        "record",
        "recordDuringTakeover",
    }
    _reject_unknown(body, known, where)
    agent = _string(body, "agent", where, required=False) or "builtin"
    if agent not in AGENTS:
        raise InvalidArgument(f"body.agent must be one of {', '.join(sorted(AGENTS))}")
    # An external agent's task is its own: the text is optional.
    task = _string(body, "task", where, required=agent != "external")
    has_steps = body.get("steps") is not None
    url = _string(body, "url", where, required=not has_steps)
    if url or not has_steps:
        _url(url, "body.url")
    max_steps = _integer(body, "maxSteps", where, (1, MAX_MAX_STEPS), default=DEFAULT_MAX_STEPS)
    request = session_pb2.CreateSessionRequest(task=task, url=url, max_steps=max_steps)
    raw_steps = body.get("steps")
    if raw_steps is not None:
        if not isinstance(raw_steps, list) or len(raw_steps) > MAX_STEPS:
            raise InvalidArgument(f"body.steps must be a list of at most {MAX_STEPS} steps")
        request.steps.extend(
            parse_step(step, f"body.steps[{index}]") for index, step in enumerate(raw_steps)
        )
        request.planner = automation_pb2.PLANNER_STEPS
    if agent == "external":
        # The CDP client is the agent (services/edge/README.md, "CDP").
        if request.steps:
            raise InvalidArgument("body.steps are for the built-in agent, not agent external")
        request.planner = automation_pb2.PLANNER_EXTERNAL
    elif not task.strip() and not request.steps:
        raise InvalidArgument("body.task must not be empty unless steps are given")
    viewport = body.get("viewport")
    if viewport is not None:
        if not isinstance(viewport, dict):
            raise InvalidArgument("body.viewport must be an object")
        _reject_unknown(viewport, {"width", "height"}, "body.viewport")
        request.viewport.CopyFrom(
            display_pb2.Viewport(
                width=_integer(viewport, "width", "body.viewport", VIEWPORT_WIDTH_RANGE),
                height=_integer(viewport, "height", "body.viewport", VIEWPORT_HEIGHT_RANGE),
            )
        )
    hand_over = body.get("handOver")
    if hand_over is not None:
        request.hand_over.CopyFrom(parse_hand_over(hand_over))
    record = body.get("record", False)
    if not isinstance(record, bool):
        raise InvalidArgument("body.record must be true or false")
    request.record = record
    during_takeover = body.get("recordDuringTakeover")
    if during_takeover is None:
        during_takeover = True
    if not isinstance(during_takeover, bool):
        raise InvalidArgument("body.recordDuringTakeover must be true or false")
    request.pause_recording_during_takeover = not during_takeover
    # The same bounds the session service applies (sizes of task, url, step fields).
    check_create_request(request)
    return request


def parse_hand_over(body: Any) -> automation_pb2.HandOver:
    """`handOver`: when the agent stops for a person on its own (services/edge/README.md)."""
    if not isinstance(body, dict):
        raise InvalidArgument("body.handOver must be an object")
    _reject_unknown(body, {"onPasswordField"}, "body.handOver")
    hand_over = automation_pb2.HandOver()
    on_password_field = body.get("onPasswordField")
    if on_password_field is not None:
        if not isinstance(on_password_field, bool):
            raise InvalidArgument("body.handOver.onPasswordField must be a boolean")
        hand_over.on_password_field = on_password_field
    return hand_over


@dataclass(frozen=True)
class ControlRequest:
    """PUT .../control (and session:control): what to do, conditional on the
    version the client saw, and for hand_over to whom."""

    action: session_pb2.ControlAction.ValueType
    expected_version: int | None = None
    to_user_id: str = ""
    auto_return: automation_pb2.AutoReturn | None = None


def parse_control(body: Mapping[str, Any]) -> ControlRequest:
    action = body.get("action")
    if not isinstance(action, str) or action not in CONTROL_ACTIONS:
        raise InvalidArgument(f"action must be one of {', '.join(CONTROL_ACTIONS)}, not {action!r}")
    expected = body.get("expectedVersion")
    expected_version = (
        None if expected is None else _integer(body, "expectedVersion", "body", (0, 2**63 - 1))
    )
    handing_over = CONTROL_ACTIONS[action] == session_pb2.CONTROL_ACTION_HAND_OVER
    if body.get("to") is not None and not handing_over:
        raise InvalidArgument("body.to is for hand_over only")
    to_user_id = _string(body, "to", "body") if handing_over else ""
    check_text(to_user_id, "body.to", MAX_USER_ID_BYTES)
    conditions = body.get("autoReturn")
    auto_return = None
    if conditions is not None:
        if CONTROL_ACTIONS[action] != session_pb2.CONTROL_ACTION_TAKE_CONTROL:
            raise InvalidArgument("body.autoReturn is for take_control only")
        auto_return = parse_auto_return(conditions)
    return ControlRequest(CONTROL_ACTIONS[action], expected_version, to_user_id, auto_return)


def parse_auto_return(body: Any, where: str = "body.autoReturn") -> automation_pb2.AutoReturn:
    """`autoReturn` of take_control or a request_user step (docs/state-machine.md,
    "Auto-return"); the pattern is checked here, the selector in the page."""
    if not isinstance(body, dict):
        raise InvalidArgument(f"{where} must be an object")
    _reject_unknown(body, {"urlMatches", "selectorAppears", "idleSeconds"}, where)
    idle = body.get("idleSeconds")
    if idle is None:
        idle = 0.0
    if not isinstance(idle, int | float) or isinstance(idle, bool) or not 0 <= idle < 1e9:
        raise InvalidArgument(f"{where}.idleSeconds must be a number, 0 or more")
    conditions = automation_pb2.AutoReturn(
        url_matches=_string(body, "urlMatches", where, required=False),
        selector_appears=_string(body, "selectorAppears", where, required=False),
        idle_seconds=float(idle),
    )
    if not (conditions.url_matches or conditions.selector_appears or conditions.idle_seconds):
        raise InvalidArgument(f"{where} needs urlMatches, selectorAppears or idleSeconds")
    if conditions.url_matches:
        try:
            re.compile(conditions.url_matches)
        except re.error as exc:
            raise InvalidArgument(f"{where}.urlMatches is not a pattern: {exc}") from None
    return conditions


def session_id_of(payload: Any) -> str:
    """The `id` of a Socket.IO event payload such as {id: "..."}."""
    if not isinstance(payload, dict):
        raise InvalidArgument("payload must be an object with an id")
    session_id = payload.get("id")
    if not isinstance(session_id, str) or not session_id:
        raise InvalidArgument("payload.id must be a non-empty string")
    return check_session_id(session_id, "payload.id")
