"""The edge's Socket.IO events (docs/asyncapi.yaml): a session's changes as they
happen, and the same actions as REST, acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import socketio

from baton.client.bodies import create_body
from baton.client.errors import ApiError
from baton.client.types import (
    Agent,
    ControlAction,
    EventData,
    HandOver,
    Session,
    SessionSummary,
    Step,
    Viewport,
)

# What the edge sends (docs/asyncapi.yaml, operations with action `send`).
EVENT_NAMES = (
    "session:created",
    "session:step",
    "session:control_changed",
    "session:task_changed",
    "session:control_requested",
    "session:error",
    "session:ended",
    "auth:expired",
)
# Seconds to wait for the edge to accept the connection or acknowledge an event.
CONNECT_TIMEOUT_S = 10.0
ACK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Event:
    """One event from the edge: its name (EVENT_NAMES) and its payload."""

    name: str
    data: EventData

    @property
    def session(self) -> SessionSummary | None:
        """The session's summary, which every session event carries."""
        return self.data.get("session")


class EventStream:
    """One Socket.IO connection to the edge. The events of the sessions it created
    or watches queue up in order: read them with `next()`, `wait_for()` or
    `async for`. A closed connection ends the iteration (`next()` raises
    ConnectionError). Made by BatonClient.events()."""

    def __init__(self, sio: socketio.AsyncClient) -> None:
        self._sio = sio
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._closed = False

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls, base_url: str, token: str, http: aiohttp.ClientSession | None = None
    ) -> AsyncIterator[EventStream]:
        """Connected with `token`; ApiError (401) when the edge refuses it."""
        own_http = http is None
        session = http if http is not None else aiohttp.ClientSession()
        sio = socketio.AsyncClient(reconnection=False, http_session=session)
        stream = cls(sio)
        refusals: list[Any] = []
        sio.on("connect_error", refusals.append)
        sio.on("disconnect", stream._disconnected)
        sio.on("*", stream._received)
        try:
            try:
                await sio.connect(
                    base_url,
                    auth={"token": token},
                    transports=["websocket"],
                    wait_timeout=CONNECT_TIMEOUT_S,
                )
            except socketio.exceptions.ConnectionError:
                refusal = _refusal(refusals)
                if refusal is None:
                    raise  # not the edge's refusal: the network, an Origin refused
                raise refusal from None
            try:
                yield stream
            finally:
                await sio.disconnect()
        finally:
            if own_http:
                await session.close()

    async def _received(self, name: str, data: Any = None) -> None:
        self._queue.put_nowait(Event(name, cast(EventData, data if isinstance(data, dict) else {})))

    async def _disconnected(self, reason: Any = None) -> None:
        self._closed = True
        self._queue.put_nowait(None)

    async def _call(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        ack = await self._sio.call(event, payload, timeout=ACK_TIMEOUT_S)
        if not isinstance(ack, dict):
            raise ApiError(500, "internal", f"{event}: unexpected acknowledgement {ack!r}")
        if not ack.get("ok"):
            error = ack.get("error") or {}
            raise ApiError.from_code(str(error.get("code")), str(error.get("message")))
        session: dict[str, Any] = ack["session"]
        return session

    # -- what a client sends (docs/asyncapi.yaml, operations with action `receive`) --

    async def create_session(
        self,
        task: str = "",
        url: str | None = None,
        *,
        steps: Sequence[Step] | None = None,
        max_steps: int | None = None,
        agent: Agent | None = None,
        hand_over: HandOver | None = None,
        viewport: Viewport | None = None,
        record: bool | None = None,
    ) -> SessionSummary:
        """session:create, as BatonClient.create_session; this connection then
        receives the session's events (session:created first)."""
        body = create_body(
            task,
            url,
            steps=steps,
            max_steps=max_steps,
            agent=agent,
            hand_over=hand_over,
            viewport=viewport,
            record=record,
        )
        return cast(SessionSummary, await self._call("session:create", body))

    async def watch(self, session_id: str) -> Session:
        """session:watch: the session's events come to this connection from now on;
        answers the session with its steps."""
        return cast(Session, await self._call("session:watch", {"id": session_id}))

    async def change_control(
        self,
        session_id: str,
        action: ControlAction,
        expected_version: int | None = None,
        to: str | None = None,
    ) -> SessionSummary:
        payload: dict[str, Any] = {"id": session_id, "action": action}
        if expected_version is not None:
            payload["expectedVersion"] = expected_version
        if to is not None:
            payload["to"] = to
        return cast(SessionSummary, await self._call("session:control", payload))

    async def request_control(self, session_id: str) -> SessionSummary:
        """session:request_control: every watcher gets session:control_requested."""
        return cast(SessionSummary, await self._call("session:request_control", {"id": session_id}))

    async def pause(self, session_id: str) -> SessionSummary:
        return cast(SessionSummary, await self._call("session:pause", {"id": session_id}))

    async def resume(self, session_id: str) -> SessionSummary:
        return cast(SessionSummary, await self._call("session:resume", {"id": session_id}))

    async def end_session(self, session_id: str) -> SessionSummary:
        return cast(SessionSummary, await self._call("session:end", {"id": session_id}))

    # -- what the edge sends --

    async def next(self, timeout_s: float | None = None) -> Event:
        """The next event; TimeoutError after `timeout_s`, ConnectionError once closed."""
        if self._closed and self._queue.empty():
            raise ConnectionError("the Socket.IO connection to the edge is closed")
        async with asyncio.timeout(timeout_s):
            event = await self._queue.get()
        if event is None:
            raise ConnectionError("the Socket.IO connection to the edge is closed")
        return event

    async def wait_for(
        self,
        predicate: Callable[[Event], bool],
        timeout_s: float | None = None,
        names: Sequence[str] = (),
    ) -> Event:
        """The first event (of `names`, when given) for which `predicate` holds;
        the events before it are consumed."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            event = await self.next(left)
            if (not names or event.name in names) and predicate(event):
                return event

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            try:
                yield await self.next()
            except ConnectionError:
                return


def _refusal(refusals: list[Any]) -> ApiError | None:
    """The edge's connect_error ({message, data: {code}}) as the REST refusal it is."""
    for refusal in refusals:
        if isinstance(refusal, dict) and isinstance(refusal.get("data"), dict):
            code = str(refusal["data"].get("code", "unauthenticated"))
            return ApiError.from_code(code, str(refusal.get("message", "")))
    return None
