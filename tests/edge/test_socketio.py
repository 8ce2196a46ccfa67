"""Socket.IO events with a real python-socketio client, real session service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import socketio

from baton.automation.v1 import automation_pb2
from tests.edge.harness import OPERATOR_TOKEN, Stack, bearer, running_stack, user_token

ALICE = user_token("alice")
BOB = user_token("bob")
SERVER_EVENTS = (
    "session:created",
    "session:step",
    "session:control_changed",
    "session:task_changed",
    "session:error",
    "session:ended",
)


class Client:
    """A Socket.IO client that queues every server event it receives."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        for name in SERVER_EVENTS:
            self.sio.on(name, self._recorder(name))

    def _recorder(self, name: str) -> Callable[[Any], Any]:
        async def record(data: Any) -> None:
            await self.events.put((name, data))

        return record

    async def call(self, event: str, payload: Any) -> Any:
        return await self.sio.call(event, payload, timeout=30)

    async def next_event(self, name: str) -> Any:
        """The next event called `name`, skipping others."""
        while True:
            got, data = await self.events.get()
            if got == name:
                return data


@asynccontextmanager
async def connected(stack: Stack, token: str) -> AsyncIterator[Client]:
    client = Client()
    await client.sio.connect(
        stack.url, auth={"token": token}, socketio_path="socket.io", transports=["websocket"]
    )
    try:
        yield client
    finally:
        await client.sio.disconnect()


NEW_SESSION = {"task": "fill the form", "url": "http://127.0.0.1:9/form", "maxSteps": 4}


@pytest.mark.parametrize("auth", [None, {}, {"token": "wrong"}, {"token": 42}, {"token": "\ud800"}])
async def test_connection_without_a_valid_token_is_refused(
    stack: Stack, auth: dict[str, Any] | None
) -> None:
    client = socketio.AsyncClient(reconnection=False)
    refusals: list[Any] = []
    client.on("connect_error", refusals.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(stack.url, auth=auth, transports=["websocket"])
    assert not client.connected
    assert refusals[0]["data"] == {"code": "unauthenticated"}
    assert refusals[0]["message"]


async def test_create_acknowledges_and_emits_created(stack: Stack) -> None:
    async with connected(stack, ALICE) as alice:
        ack = await alice.call("session:create", NEW_SESSION)
        assert ack["ok"] is True
        assert ack["session"]["state"] == "AI_CONTROL"
        created = await alice.next_event("session:created")
        assert created["session"]["id"] == ack["session"]["id"]
        bad = await alice.call("session:create", {"task": "t", "url": "ftp://x/"})
        assert bad["ok"] is False
        assert bad["error"]["code"] == "invalid_argument"


async def test_events_fan_out_to_every_watcher(stack: Stack) -> None:
    async with (
        connected(stack, ALICE) as alice,
        connected(stack, OPERATOR_TOKEN) as operator,
        connected(stack, BOB) as bob,
    ):
        session = (await alice.call("session:create", NEW_SESSION))["session"]
        session_id = session["id"]
        watched = await operator.call("session:watch", {"id": session_id})
        assert watched == {"ok": True, "session": watched["session"]}
        assert watched["session"]["id"] == session_id
        refused = await bob.call("session:watch", {"id": session_id})
        assert refused["ok"] is False and refused["error"]["code"] == "not_found"

        feed = stack.automation.feed(session_id)
        feed.put_nowait(
            automation_pb2.StartTaskResponse(
                step=automation_pb2.StepEvent(
                    index=0,
                    action="goto",
                    status=automation_pb2.STEP_STATUS_SUCCEEDED,
                    description="open the form",
                    url="http://127.0.0.1:9/form",
                    duration_ms=300,
                )
            )
        )
        for client in (alice, operator):
            step = await client.next_event("session:step")
            assert step["step"] == {
                "index": 0,
                "action": "goto",
                "status": "succeeded",
                "description": "open the form",
                "url": "http://127.0.0.1:9/form",
                "durationMs": 300,
            }
            assert step["session"]["task"]["stepsCompleted"] == 1
            # The event carries its step and the summary, not the step list.
            assert step["session"]["stepCount"] == 1 and "steps" not in step["session"]
        # Watching answers the full view: the steps so far.
        rewatched = await operator.call("session:watch", {"id": session_id})
        assert [s["index"] for s in rewatched["session"]["steps"]] == [0]

        taken = await alice.call("session:control", {"id": session_id, "action": "take_control"})
        assert taken["ok"] is True and taken["session"]["state"] == "USER_CONTROL"
        for client in (alice, operator):
            changed = await client.next_event("session:control_changed")
            assert changed["action"] == "take_control"
            assert changed["session"]["controllerUserId"] == "alice"

        refused = await alice.call("session:pause", {"id": session_id})
        assert refused["ok"] is False and refused["error"]["code"] == "failed_precondition"
        returned = await alice.call(
            "session:control", {"id": session_id, "action": "return_control"}
        )
        assert returned["session"]["controller"] == "ai"
        paused = await operator.call("session:pause", {"id": session_id})
        assert paused["ok"] is True and paused["session"]["state"] == "PAUSED"
        resumed = await alice.call("session:resume", {"id": session_id})
        assert resumed["ok"] is True and resumed["session"]["state"] == "AI_CONTROL"
        actions = []
        for _ in range(3):
            actions.append((await operator.next_event("session:control_changed"))["action"])
        assert actions == ["return_control", "pause", "resume"]

        feed.put_nowait(
            automation_pb2.StartTaskResponse(
                user_requested=automation_pb2.UserRequested(reason="solve the CAPTCHA")
            )
        )
        for client in (alice, operator):
            changed = await client.next_event("session:task_changed")
            assert changed["session"]["task"]["status"] == "WAITING_FOR_USER"
            assert changed["session"]["userRequestReason"] == "solve the CAPTCHA"

        feed.put_nowait(
            automation_pb2.StartTaskResponse(
                status_changed=automation_pb2.TaskStatusChanged(
                    status=automation_pb2.TASK_STATUS_FAILED, reason="the form is gone"
                )
            )
        )
        for client in (alice, operator):
            error = await client.next_event("session:error")
            assert "the form is gone" in error["message"]
            assert error["session"]["task"]["status"] == "FAILED"

        ended = await alice.call("session:end", {"id": session_id})
        assert ended["ok"] is True and ended["session"]["state"] == "ENDED"
        for client in (alice, operator):
            event = await client.next_event("session:ended")
            assert event["session"]["id"] == session_id
            assert event["reason"]

    status_text = await metrics_text(stack)
    # The step was observed before it was relayed to the watchers.
    assert "baton_step_duration_seconds_count 1" in status_text
    assert 'baton_step_duration_seconds_bucket{le="0.5"} 1' in status_text
    assert 'baton_step_duration_seconds_bucket{le="0.25"} 0' in status_text


async def metrics_text(stack: Stack) -> str:
    async with stack.http.get(f"{stack.url}/metrics", headers=bearer(OPERATOR_TOKEN)) as response:
        return await response.text()


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("session:watch", {"id": "no-such-session"}),
        ("session:control", {"id": "no-such-session", "action": "take_control"}),
        ("session:end", {"id": "no-such-session"}),
    ],
)
async def test_unknown_sessions_are_not_found(stack: Stack, event: str, payload: Any) -> None:
    async with connected(stack, ALICE) as alice:
        ack = await alice.call(event, payload)
    assert ack["ok"] is False
    assert ack["error"]["code"] == "not_found"


CLIENT_EVENTS = (
    "session:create",
    "session:watch",
    "session:control",
    "session:pause",
    "session:resume",
    "session:end",
)
# Payloads no event accepts: not objects, ids that are not ids, fields that
# are not what they should be.
MALFORMED_PAYLOADS: list[Any] = [
    None,
    3,
    "not an object",
    [],
    [{"id": "x"}],
    {},
    {"id": 3},
    {"id": ""},
    {"id": None},
    {"id": "\ud800"},
    {"id": "x" * 20_000},
    {"id": "../etc/passwd"},
    {"id": {"nested": "object"}},
    {"id": "x", "action": "steal"},
    {"id": "x", "action": 7},
    {"task": "\udfff", "url": "http://127.0.0.1:9/"},
    {"task": "t", "url": "ftp://x/"},
    {"task": "t", "url": "http://127.0.0.1:9/", "maxSteps": "many"},
    {"task": "t", "url": "http://127.0.0.1:9/", "steps": [{"action": "explode"}]},
]


@pytest.mark.parametrize("event", CLIENT_EVENTS)
async def test_malformed_payloads_are_invalid_for_every_event(stack: Stack, event: str) -> None:
    async with connected(stack, ALICE) as alice:
        for payload in MALFORMED_PAYLOADS:
            ack = await alice.call(event, payload)
            assert ack["ok"] is False, (event, payload, ack)
            # Refused for its shape, or (an event that ignores the bad field)
            # for naming no session: never internal, never a huge echo.
            assert ack["error"]["code"] in {"invalid_argument", "not_found"}, (event, payload, ack)
            assert len(ack["error"]["message"]) < 300
        # The connection survived them all and still works.
        created = await alice.call("session:create", NEW_SESSION)
        assert created["ok"] is True
        watched = await alice.call("session:watch", {"id": created["session"]["id"]})
        assert watched["ok"] is True


async def test_only_the_edges_own_and_configured_origins_may_connect() -> None:
    async with running_stack(cors_origins=("https://console.example",)) as stack:
        # On the stack's HTTP session, which the stack closes: a refused
        # handshake leaves the client's own open.
        client = socketio.AsyncClient(reconnection=False, http_session=stack.http)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(
                stack.url,
                auth={"token": ALICE},
                headers={"Origin": "https://evil.example"},
                transports=["websocket"],
            )
        assert not client.connected
        for origin in (stack.url, "https://console.example"):
            client = socketio.AsyncClient(reconnection=False, http_session=stack.http)
            await client.connect(
                stack.url,
                auth={"token": ALICE},
                headers={"Origin": origin},
                transports=["websocket"],
            )
            assert client.connected
            await client.disconnect()


async def test_a_connection_ends_when_its_jwt_expires(stack: Stack) -> None:
    client = Client()
    expired: asyncio.Queue[Any] = asyncio.Queue()
    client.sio.on("auth:expired", expired.put)
    disconnected = asyncio.Event()
    client.sio.on("disconnect", lambda *reason: disconnected.set())
    await client.sio.connect(
        stack.url, auth={"token": user_token("alice", lifetime_s=2)}, transports=["websocket"]
    )
    # Live until then.
    assert (await client.call("session:create", NEW_SESSION))["ok"] is True
    async with asyncio.timeout(15):
        notice = await expired.get()
        await disconnected.wait()
    assert notice == {"error": {"code": "unauthenticated", "message": "token expired"}}
    assert not client.sio.connected
