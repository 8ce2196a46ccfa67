"""The edge against the real session service (gRPC on loopback, twin workers).

The session service is the lead's real server; only its worker host (display
and automation) is replaced by the in-memory twins of tests/session, with slots
whose websocket_url points at `RfbRecorder`, a stand-in websockify that
records what the edge forwards after its (VncAuth) handshake, from ClientInit on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import jwt
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.typing import Subprotocol

from baton.client import BatonClient
from baton.client.rest import SESSIONS
from baton.display.v1 import display_pb2
from services.edge.auth import Authenticator
from services.edge.server import RunningEdge, start_edge_server
from services.edge.settings import EdgeSettings
from services.runtime.grpc_server import RunningServer
from services.runtime.vnc_auth import challenge_response
from services.session.server import start_session_server
from services.session.settings import SessionSettings
from services.session.workers import WorkerHost
from tests.conftest import INTERNAL_TOKEN
from tests.session.twins import AutomationTwin, DisplayTwin

OPERATOR_TOKEN = "operator-token-for-tests"
JWT_SECRET = "jwt-secret-for-the-edge-tests-0123456789"
SERVER_VERSION = b"RFB 003.008\n"
SLOT_PASSWORD = "slot-pw1"
# What a viewer of the edge reads after its ClientInit: the display's ServerInit.
SERVER_INIT = struct.pack(">HH", 800, 600) + bytes(16) + struct.pack(">I", 6) + b"recder"
# The viewer's side of the edge's handshake: version, security None, shared.
CLIENT_HANDSHAKE = b"RFB 003.008\n" + b"\x01" + b"\x01"
# What the edge sends the viewer after its version, up to ServerInit: security
# None offered, SecurityResult OK, the display's ServerInit.
EDGE_HANDSHAKE = b"\x01\x01" + bytes(4) + SERVER_INIT


def user_token(user_id: str, lifetime_s: float = 6 * 3600) -> str:
    """A user JWT, as an identity provider would issue it: it expires."""
    now = time.time()
    claims = {"sub": user_id, "iat": int(now), "exp": int(now + lifetime_s)}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class RfbRecorder:
    """A stand-in for a slot's websockify: an RFB server wanting the slot password.

    It records what arrives after the security handshake (from ClientInit on)
    and counts refused passwords.
    """

    def __init__(self) -> None:
        self.received: list[bytearray] = []
        self.closed: set[int] = set()
        self.refused = 0
        self._changed = asyncio.Condition()
        self._server: Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            subprotocols=[Subprotocol("binary")],
            compression=None,
        )
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/websockify"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _authenticate(self, connection: ServerConnection) -> bytes | None:
        """VncAuth with SLOT_PASSWORD; the bytes read past it, or None when refused."""
        pending = bytearray()

        async def take(count: int) -> bytes:
            while len(pending) < count:
                message = await connection.recv()
                assert isinstance(message, bytes), "the edge must send binary frames"
                pending.extend(message)
            data = bytes(pending[:count])
            del pending[:count]
            return data

        await connection.send(SERVER_VERSION)
        assert await take(12) == SERVER_VERSION
        await connection.send(b"\x01\x02")
        assert await take(1) == b"\x02"
        challenge = os.urandom(16)
        await connection.send(challenge)
        if await take(16) != challenge_response(SLOT_PASSWORD, challenge):
            self.refused += 1
            await connection.send(struct.pack(">II", 1, 6) + b"denied")
            return None
        await connection.send(struct.pack(">I", 0))
        return bytes(pending)

    async def _handle(self, connection: ServerConnection) -> None:
        pending = None
        with contextlib.suppress(Exception):
            pending = await self._authenticate(connection)
        if pending is None:
            return
        buffer = bytearray(pending)
        index = len(self.received)
        self.received.append(buffer)
        sent_init = False
        with contextlib.suppress(Exception):
            if buffer:
                await connection.send(SERVER_INIT)
                sent_init = True
            async for message in connection:
                if not sent_init:
                    await connection.send(SERVER_INIT)
                    sent_init = True
                assert isinstance(message, bytes), "the edge must send binary frames"
                async with self._changed:
                    buffer += message
                    self._changed.notify_all()
        async with self._changed:
            self.closed.add(index)
            self._changed.notify_all()

    async def wait_closed(self, connection_index: int) -> bytes:
        """Everything connection `connection_index` received, once the edge closed it."""
        async with self._changed:
            await self._changed.wait_for(lambda: connection_index in self.closed)
            return bytes(self.received[connection_index])

    async def wait_for(self, connection_index: int, marker: bytes) -> bytes:
        """Everything connection `connection_index` received, once `marker` is in it."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: (
                    len(self.received) > connection_index
                    and marker in self.received[connection_index]
                )
            )
            return bytes(self.received[connection_index])


class StreamDisplayTwin(DisplayTwin):
    """Slots whose stream endpoint is the recorder (or whatever the test sets)."""

    def __init__(self, websocket_url: str, capacity: int = 100) -> None:
        super().__init__(capacity)
        self.websocket_url = websocket_url
        self.vnc_password = SLOT_PASSWORD

    async def allocate_slot(
        self, session_id: str, viewport: display_pb2.Viewport, record: bool = False
    ) -> display_pb2.Slot:
        slot = await super().allocate_slot(session_id, viewport, record)
        slot.websocket_url = self.websocket_url
        slot.vnc_password = self.vnc_password
        self.slots[slot.id] = slot
        return slot


@dataclass
class Stack:
    session_server: RunningServer
    edge: RunningEdge
    display: StreamDisplayTwin
    automation: AutomationTwin
    recorder: RfbRecorder
    http: aiohttp.ClientSession
    authenticator: Authenticator

    @property
    def url(self) -> str:
        return self.edge.base_url

    def client(self, token: str) -> BatonClient:
        """baton.client as `token`'s holder, on the stack's HTTP session."""
        return BatonClient(self.url, token, http=self.http)

    async def create_session(self, token: str, **body: object) -> dict[str, object]:
        # The body as given (the edge tests send odd ones): the client's raw call.
        payload = {"task": "fill the form", "url": "http://127.0.0.1:9/form", **body}
        session: dict[str, object] = await self.client(token).request("POST", SESSIONS, payload)
        return session

    async def control(self, token: str, session_id: object, action: str) -> dict[str, object]:
        changed = await self.client(token).change_control(str(session_id), cast(Any, action))
        return cast(dict[str, object], changed)

    async def stream_url(self, token: str, session_id: object) -> str:
        return (await self.client(token).get_stream_url(str(session_id)))["url"]


@contextlib.asynccontextmanager
async def running_stack(
    capacity: int = 100, session_settings: SessionSettings | None = None, **edge_overrides: Any
) -> AsyncIterator[Stack]:
    """The stack; `edge_overrides` replace fields of the edge's settings."""
    recorder = RfbRecorder()
    await recorder.start()
    display = StreamDisplayTwin(recorder.url, capacity)
    automation = AutomationTwin()
    worker = WorkerHost(
        host_id="twin",
        display_address="twin-display",
        automation_address="twin-automation",
        display=display,
        automation=automation,
    )
    session_server = await start_session_server(
        session_settings or SessionSettings(internal_token=INTERNAL_TOKEN), worker=worker
    )
    settings = EdgeSettings(
        internal_token=INTERNAL_TOKEN,
        port=0,
        session_address=f"127.0.0.1:{session_server.port}",
        api_token=OPERATOR_TOKEN,
        jwt_secret=JWT_SECRET,
        max_body_bytes=4096,
    )
    settings = dataclasses.replace(settings, **edge_overrides)
    authenticator = Authenticator(
        settings.api_token, settings.jwt_secret, jwt_max_lifetime_s=settings.jwt_max_lifetime_s
    )
    edge = await start_edge_server(settings, authenticator)
    http = aiohttp.ClientSession()
    try:
        yield Stack(session_server, edge, display, automation, recorder, http, authenticator)
    finally:
        await http.close()
        # End every task feed so the session service's task runs finish.
        for feed in automation.feeds.values():
            feed.put_nowait(None)
        await edge.stop()
        await session_server.stop(grace=1)
        await recorder.stop()
