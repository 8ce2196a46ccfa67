"""Any edge instance serves any session: two edges, one session service."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio

from services.edge.auth import Authenticator
from services.edge.server import start_edge_server
from services.edge.settings import EdgeSettings
from tests.conftest import INTERNAL_TOKEN
from tests.edge.harness import JWT_SECRET, OPERATOR_TOKEN, running_stack, user_token
from tests.edge.test_stream import KEY_A, marker, viewer

ALICE = user_token("alice")


async def test_a_change_made_on_one_edge_reaches_viewers_and_watchers_on_another() -> None:
    async with running_stack() as stack:
        settings = EdgeSettings(
            internal_token=INTERNAL_TOKEN,
            port=0,
            session_address=f"127.0.0.1:{stack.session_server.port}",
            api_token=OPERATOR_TOKEN,
            jwt_secret=JWT_SECRET,
        )
        other = await start_edge_server(settings, Authenticator(OPERATOR_TOKEN, JWT_SECRET))
        watcher = socketio.AsyncClient(reconnection=False)
        try:
            session = await stack.create_session(ALICE)
            # A stream URL from the first edge, used on the second: both share the
            # operator token, so both accept it.
            url = await stack.stream_url(ALICE, session["id"])
            url = url.replace(f":{stack.edge.port}/", f":{other.port}/")
            async with viewer(url) as alice:
                changes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
                watcher.on("session:control_changed", changes.put)
                await watcher.connect(
                    other.base_url, auth={"token": ALICE}, transports=["websocket"]
                )
                # The viewer subscribed to the second edge's feed before the
                # watcher did, so its gate opens before the watcher is told.
                ack = await watcher.call("session:watch", {"id": session["id"]})
                assert ack["ok"] is True

                await alice.send(KEY_A + marker(1))
                assert (await stack.recorder.wait_for(0, marker(1))).endswith(b"\x01" + marker(1))

                # The change is made through the first edge.
                await stack.control(ALICE, session["id"], "take_control")
                assert (await changes.get())["action"] == "take_control"
                await alice.send(KEY_A + marker(2))
                received = await stack.recorder.wait_for(0, marker(2))
                assert received.endswith(marker(1) + KEY_A + marker(2))
        finally:
            await watcher.disconnect()
            await other.stop()
