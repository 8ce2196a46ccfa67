"""docs/asyncapi.yaml against the edge's Socket.IO code: every event the edge emits or
handles is in the document with exactly the payload fields it has, and the document
has nothing else.

Event names are found two ways: every `session:*` / `auth:*` string in the edge's
modules (so a new `emit` cannot slip by), and by running the code (the handlers the
gateway registers, the messages each WatchSession event becomes)."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from baton.automation.v1 import automation_pb2
from baton.session.v1 import session_pb2
from services.edge import socketio_gateway
from services.edge.json_views import error_json, parse_control, session_id_of
from services.runtime.errors import Unauthenticated

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EVENT_PREFIXES = ("session:", "auth:")


def asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
    return document


def resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """Follow `$ref`s, within the document or into docs/openapi.json."""
    while "$ref" in schema:
        target, _, pointer = schema["$ref"].partition("#")
        if target:
            # Refs inside the OpenAPI schemas are within openapi.json.
            document = json.loads((DOCS / target).read_text())
        node: Any = document
        for part in pointer.strip("/").split("/"):
            node = node[part]
        schema = node
    return schema


def messages_by_name() -> dict[str, dict[str, Any]]:
    document = asyncapi()
    return {m["name"]: m for m in document["components"]["messages"].values()}


def directions() -> dict[str, set[str]]:
    """Message names per operation action: "send" (edge to client), "receive"."""
    document = asyncapi()
    names = {key: m["name"] for key, m in document["components"]["messages"].items()}
    found: dict[str, set[str]] = {"send": set(), "receive": set()}
    for operation in document["operations"].values():
        for ref in operation["messages"]:
            found[operation["action"]].add(names[ref["$ref"].rsplit("/", 1)[1]])
    return found


def event_names_in_code() -> set[str]:
    """Every string constant of the edge's modules that names an event."""
    names = set()
    for module in (ROOT / "services/edge").glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.startswith(EVENT_PREFIXES)
                and " " not in node.value
                and node.value.rstrip(":") == node.value
            ):
                names.add(node.value)
    return names


class RecordingServer:
    """What SocketGateway registers: its client event handlers."""

    def __init__(self) -> None:
        self.handled: list[str] = []

    def on(self, name: str, handler: Callable[..., Any]) -> None:
        self.handled.append(name)


def summary() -> session_pb2.Session:
    return session_pb2.Session(id="s-1", state=session_pb2.CONTROL_STATE_AI_CONTROL, version=3)


def every_watch_event() -> list[session_pb2.WatchSessionResponse]:
    step = automation_pb2.StepEvent(index=0, action="goto", description="open", url="http://x/")
    failed = session_pb2.Session(id="s-1", state=session_pb2.CONTROL_STATE_FAILED, version=4)
    return [
        session_pb2.WatchSessionResponse(created=session_pb2.SessionCreated(session=summary())),
        session_pb2.WatchSessionResponse(
            step=session_pb2.StepReported(session=summary(), step=step)
        ),
        session_pb2.WatchSessionResponse(
            control_changed=session_pb2.ControlChanged(
                session=summary(), action=session_pb2.CONTROL_ACTION_PAUSE
            )
        ),
        session_pb2.WatchSessionResponse(task_changed=session_pb2.TaskChanged(session=summary())),
        session_pb2.WatchSessionResponse(
            control_requested=session_pb2.ControlRequested(session=summary(), user_id="bob")
        ),
        session_pb2.WatchSessionResponse(
            error=session_pb2.SessionError(session=summary(), message="the display crashed")
        ),
        session_pb2.WatchSessionResponse(
            ended=session_pb2.SessionEnded(session=failed, reason="worker host lost")
        ),
    ]


def emitted() -> dict[str, dict[str, Any]]:
    """Every message the edge sends, by name, with a payload it sends."""
    found: dict[str, dict[str, Any]] = {}
    for event in every_watch_event():
        for name, payload in socketio_gateway.event_messages(event):
            found[name] = payload
    # Sent by the gateway itself: to the creator, and when a JWT expires.
    found.setdefault("session:created", {"session": {}})
    found["auth:expired"] = error_json(Unauthenticated("token expired"))
    return found


def test_the_document_names_exactly_the_events_of_the_code() -> None:
    documented = set(messages_by_name()) - {"ack"}
    in_code = event_names_in_code()
    assert "session:step" in in_code, "the positive marker: the edge's modules were read"
    assert documented == in_code, (
        f"undocumented: {sorted(in_code - documented)}; "
        f"documented but not in the code: {sorted(documented - in_code)}"
    )


def test_client_events_are_the_handlers_the_gateway_registers() -> None:
    server = RecordingServer()
    socketio_gateway.SocketGateway(server, None, None, None, None)  # type: ignore[arg-type]
    handled = set(server.handled) - {"connect", "disconnect"}
    assert "session:control" in handled
    assert directions()["receive"] == handled


def test_edge_events_carry_exactly_the_documented_fields() -> None:
    document = asyncapi()
    messages = messages_by_name()
    sent = emitted()
    assert directions()["send"] == set(sent)
    for name, payload in sent.items():
        schema = resolve(messages[name]["payload"], document)
        assert set(schema["properties"]) == set(payload), name
        assert set(schema["required"]) <= set(payload), name
    # Nested shapes are the REST API's: every session field the edge fills is in
    # SessionSummary, every step field in StepEvent.
    step_payload = sent["session:step"]
    session_schema = resolve(document["components"]["schemas"]["SessionSummary"], document)
    assert set(step_payload["session"]) <= set(session_schema["properties"])
    step_schema = resolve(document["components"]["schemas"]["StepEvent"], document)
    assert set(step_payload["step"]) <= set(step_schema["properties"])
    assert sent["session:control_changed"]["action"] == "pause"


def test_client_event_payloads_are_the_fields_the_edge_reads() -> None:
    """The fields of session:control and the {id} events are those the parsers read."""

    read: set[str] = set()

    class Recording(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            read.add(key)
            return super().get(key, default)

    payload = Recording(id="s-1", action="pause", expectedVersion=2)
    session_id_of(payload)
    parse_control(payload)
    messages = messages_by_name()
    document = asyncapi()
    control = resolve(messages["session:control"]["payload"], document)
    assert (
        set(control["properties"])
        == read
        == {"id", "action", "expectedVersion", "to", "autoReturn"}
    )
    read.clear()
    session_id_of(Recording(id="s-1"))
    assert read == {"id"}
    for name in (
        "session:watch",
        "session:pause",
        "session:resume",
        "session:end",
        "session:request_control",
    ):
        assert set(resolve(messages[name]["payload"], document)["properties"]) == read
