"""Unit tests of the JSON contract conversions and request validation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from baton.automation.v1 import automation_pb2
from baton.display.v1 import display_pb2
from baton.session.v1 import session_pb2
from services.edge.json_views import (
    ControlRequest,
    error_json,
    parse_control,
    parse_create_session,
    parse_json_object,
    parse_step,
    session_id_of,
    session_json,
)
from services.edge.socketio_gateway import event_messages
from services.runtime.errors import InvalidArgument, NotFound, PayloadTooLarge


def test_session_json_matches_design() -> None:
    session = session_pb2.Session(
        id="s1",
        state=session_pb2.CONTROL_STATE_USER_CONTROL,
        controller=session_pb2.CONTROLLER_USER,
        controller_user_id="alice",
        version=4,
        owner_user_id="alice",
        task=session_pb2.Task(
            text="log in",
            url="https://example.test/",
            max_steps=5,
            status=automation_pb2.TASK_STATUS_RUNNING,
            steps_completed=1,
        ),
        step_count=2,
        steps=[
            automation_pb2.StepEvent(
                index=0,
                action="goto",
                status=automation_pb2.STEP_STATUS_SUCCEEDED,
                description="open the page",
                url="https://example.test/",
                duration_ms=120,
            ),
            automation_pb2.StepEvent(
                index=1,
                action="click",
                status=automation_pb2.STEP_STATUS_FAILED,
                error="no such element",
            ),
        ],
        create_time=Timestamp(seconds=1_700_000_000, nanos=250_000_000),
        update_time=Timestamp(seconds=1_700_000_001),
        viewport=display_pb2.Viewport(width=1280, height=720),
    )
    body = session_json(session, with_steps=True)
    assert body == {
        "id": "s1",
        "state": "USER_CONTROL",
        "controller": "user",
        "controllerUserId": "alice",
        "version": 4,
        "ownerUserId": "alice",
        "task": {
            "text": "log in",
            "url": "https://example.test/",
            "maxSteps": 5,
            "status": "RUNNING",
            "stepsCompleted": 1,
        },
        "stepCount": 2,
        "steps": [
            {
                "index": 0,
                "action": "goto",
                "status": "succeeded",
                "description": "open the page",
                "url": "https://example.test/",
                "durationMs": 120,
            },
            {
                "index": 1,
                "action": "click",
                "status": "failed",
                "description": "",
                "url": "",
                "durationMs": 0,
                "error": "no such element",
            },
        ],
        "createdAt": "2023-11-14T22:13:20.250Z",
        "updatedAt": "2023-11-14T22:13:21.000Z",
        "viewport": {"width": 1280, "height": 720},
    }
    json.dumps(body)
    # The summary (lists, control answers, Socket.IO events): no steps, the count.
    summary = session_json(session)
    assert "steps" not in summary
    assert summary == {key: value for key, value in body.items() if key != "steps"}


def test_ended_session_has_reason_and_no_controller() -> None:
    session = session_pb2.Session(
        id="s1", state=session_pb2.CONTROL_STATE_ENDED, ended_reason="idle timeout"
    )
    body = session_json(session)
    assert body["state"] == "ENDED"
    assert body["controller"] is None
    assert body["controllerUserId"] is None
    assert body["endedReason"] == "idle timeout"
    assert body["createdAt"] is None


def test_error_json() -> None:
    assert error_json(NotFound("no session s1")) == {
        "error": {"code": "not_found", "message": "no session s1"}
    }
    # Quoted input that UTF-8 cannot encode is escaped, not a failed response.
    quoted = error_json(InvalidArgument("unknown field(s) in body: \ud800"))
    assert quoted["error"]["message"] == "unknown field(s) in body: \\ud800"


def test_parse_json_object() -> None:
    assert parse_json_object(b'{"a": 1}', 100) == {"a": 1}
    with pytest.raises(PayloadTooLarge):
        parse_json_object(b'{"a": "' + b"x" * 100 + b'"}', 100)
    for raw in (b"{", b"[1]", b"\xff", b""):
        with pytest.raises(InvalidArgument):
            parse_json_object(raw, 100)
    with pytest.raises(InvalidArgument, match="nested too deeply"):
        parse_json_object(b'{"a": ' + b"[" * 50_000, 100_000)


def test_parse_create_session_with_explicit_steps() -> None:
    request = parse_create_session(
        {
            "task": "search",
            "url": "http://127.0.0.1:9/",
            "maxSteps": 7,
            "viewport": {"width": 1024, "height": 768},
            "steps": [
                {"action": "goto", "url": "http://127.0.0.1:9/a"},
                {"action": "fill", "selector": "#q", "value": "baton"},
                {"action": "press", "key": "Enter", "timeoutMs": 500},
                {"action": "scroll", "dy": 300},
                {"action": "request_user", "reason": "captcha", "allowFailure": True},
                {"action": "screenshot"},
            ],
        }
    )
    assert request.task == "search"
    assert request.max_steps == 7
    assert request.viewport == display_pb2.Viewport(width=1024, height=768)
    assert request.planner == automation_pb2.PLANNER_STEPS
    assert [step.WhichOneof("action") for step in request.steps] == [
        "goto",
        "fill",
        "press",
        "scroll",
        "request_user",
        "screenshot",
    ]
    assert request.steps[1].fill == automation_pb2.FillAction(selector="#q", value="baton")
    assert request.steps[2].timeout_ms == 500
    assert request.steps[3].scroll == automation_pb2.ScrollAction(dx=0, dy=300)
    assert request.steps[4].allow_failure


def test_url_may_be_left_to_explicit_steps() -> None:
    request = parse_create_session({"task": "t", "steps": [{"action": "screenshot"}]})
    assert request.url == ""
    with pytest.raises(InvalidArgument):
        parse_create_session({"task": "t", "steps": [], "url": "file:///etc/passwd"})


def test_parse_create_session_defaults() -> None:
    request = parse_create_session({"task": "look around", "url": "https://example.test/"})
    assert request.max_steps == 0  # the session service's default applies
    assert not request.steps
    assert request.planner == automation_pb2.PLANNER_UNSPECIFIED
    assert not request.HasField("viewport")


@pytest.mark.parametrize(
    "body",
    [
        {"url": "https://example.test/"},
        {"task": "", "url": "https://example.test/"},
        {"task": "t", "url": "ftp://example.test/"},
        {"task": "t", "url": "https://example.test/", "maxSteps": 0},
        {"task": "t", "url": "https://example.test/", "maxSteps": "3"},
        {"task": "t", "url": "https://example.test/", "maxSteps": True},
        {"task": "t", "url": "https://example.test/", "colour": "red"},
        {"task": "t", "url": "https://example.test/", "steps": {"action": "goto"}},
        {"task": "t", "url": "https://example.test/", "viewport": {"width": 10, "height": 10}},
        {"task": "t", "url": "https://example.test/", "viewport": [1, 2]},
    ],
)
def test_invalid_create_bodies(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        parse_create_session(body)


@pytest.mark.parametrize(
    "step",
    [
        {"action": "teleport"},
        {"url": "https://example.test/"},
        {"action": "goto"},
        {"action": "goto", "url": "javascript:alert(1)"},
        {"action": "click", "selector": ""},
        {"action": "click", "selector": "#a", "extra": 1},
        {"action": "wait", "ms": -1},
        {"action": "type", "text": 5},
        {"action": "press", "key": "a", "allowFailure": "yes"},
        "goto",
    ],
)
def test_invalid_steps(step: Any) -> None:
    with pytest.raises(InvalidArgument):
        parse_step(step, "step")


def test_parse_control() -> None:
    assert parse_control({"action": "take_control"}) == ControlRequest(
        session_pb2.CONTROL_ACTION_TAKE_CONTROL
    )
    assert parse_control({"action": "resume", "expectedVersion": 3}) == ControlRequest(
        session_pb2.CONTROL_ACTION_RESUME, 3
    )
    assert parse_control({"action": "hand_over", "to": "bob"}) == ControlRequest(
        session_pb2.CONTROL_ACTION_HAND_OVER, None, "bob"
    )
    for body in (
        {"action": "fly"},
        {},
        {"action": "pause", "expectedVersion": "3"},
        {"action": "pause", "expectedVersion": -1},
        {"action": "hand_over"},
        {"action": "hand_over", "to": 7},
        {"action": "hand_over", "to": "x" * 257},
        {"action": "take_control", "to": "bob"},
    ):
        with pytest.raises(InvalidArgument):
            parse_control(body)


def test_session_id_of() -> None:
    assert session_id_of({"id": "s1"}) == "s1"
    for payload in (None, "s1", {"id": ""}, {"id": 3}, {"id": "\ud800"}):
        with pytest.raises(InvalidArgument):
            session_id_of(payload)


def test_a_failed_end_is_told_to_socketio_watchers_as_an_error_then_the_end() -> None:
    def ended(state: session_pb2.ControlState.ValueType) -> session_pb2.WatchSessionResponse:
        return session_pb2.WatchSessionResponse(
            ended=session_pb2.SessionEnded(
                session=session_pb2.Session(id="s1", state=state), reason="worker host lost"
            )
        )

    failed = event_messages(ended(session_pb2.CONTROL_STATE_FAILED))
    assert [name for name, _ in failed] == ["session:error", "session:ended"]
    assert failed[0][1]["message"] == "worker host lost"
    assert failed[0][1]["session"]["state"] == "FAILED"
    assert failed[1][1]["reason"] == "worker host lost"
    # An ordinary end is only an end.
    normal = event_messages(ended(session_pb2.CONTROL_STATE_ENDED))
    assert [name for name, _ in normal] == ["session:ended"]


def test_a_request_user_step_may_set_auto_return_conditions() -> None:
    step = parse_step(
        {"action": "request_user", "autoReturn": {"selectorAppears": "#dashboard"}}, "step"
    )
    assert step.request_user.auto_return.selector_appears == "#dashboard"
    for bad in ({"urlMatches": "("}, {}, {"idleSeconds": -2}, {"after": 1}):
        with pytest.raises(InvalidArgument):
            parse_step({"action": "request_user", "autoReturn": bad}, "step")
