"""Issue 12, findings 1 and 6, end to end: the edge is the only way in.

Real Xvnc, websockify, Chromium and all four services. A local process that
goes straight to the slot's VNC port has no password: it cannot authenticate
and its keys never reach the page, while the controller's keys through the
edge do. Viewers never lock each other out: a burst of 50 completes its
handshakes, and stalled handshakes do not keep a good viewer out.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from services.display.rfb_client import RfbClient, RfbError, TcpChannel
from services.display.settings import NumberRange
from services.edge.rfb_filter import key_event
from services.edge.stream_proxy import VIEWER_HANDSHAKE_TIMEOUT_S
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.harness import OPERATOR_TOKEN
from tests.edge.test_full_stack import ALICE, raw_viewer, start_form_task, stream_url

pytestmark = pytest.mark.asyncio(loop_scope="module")

# This file's own display numbers and VNC ports (issue 12 helpers' ranges).
DISPLAYS = NumberRange(810, 814)
VNC_PORTS = NumberRange(19010, 19014)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FullStack]:
    async with full_stack(tmp_path_factory.mktemp("direct-access"), DISPLAYS, VNC_PORTS) as running:
        yield running


async def type_directly(port: int, text: str) -> str:
    """Try what a local process would: RFB without the password, then keys anyway."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        version = await reader.readexactly(12)
        writer.write(version)
        count = (await reader.readexactly(1))[0]
        offered = list(await reader.readexactly(count))
        assert 1 not in offered, f"security type None offered: {offered}"
        writer.write(b"\x02")
        await reader.readexactly(16)
        writer.write(bytes(16))
        (result,) = struct.unpack(">I", await reader.readexactly(4))
        assert result != 0
        # Not authenticated: a ClientInit and keys go nowhere.
        writer.write(b"\x01" + b"".join(key_event(ord(c), d) for c in text for d in (True, False)))
        await writer.drain()
        # And no password at all is refused by the RFB client, too.
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", port)
        try:
            with pytest.raises(RfbError, match="does not offer security type None"):
                await RfbClient(TcpChannel(reader2, writer2)).handshake()
        finally:
            writer2.close()
        return "refused"
    finally:
        writer.close()


async def test_a_local_process_without_the_password_types_nothing(stack: FullStack) -> None:
    session = await start_form_task(stack)
    session_id = session["id"]
    placement = await stack.placement(session_id)
    port = int((await stack.slot(placement.slot_id)).vnc_address.rpartition(":")[2])
    centre = (session["viewport"]["width"] // 2, session["viewport"]["height"] // 2)
    await stack.request(
        "PUT", f"/api/browser-session/{session_id}/control", ALICE, {"action": "take_control"}
    )
    async with raw_viewer(await stream_url(stack, ALICE, session_id)) as alice:
        await alice.click(*centre)
        await alice.sync()
        assert await type_directly(port, "xy") == "refused"
        # Positive marker: the controller's keys through the edge arrive.
        await alice.type("ok")
        await alice.sync()
        await stack.site.wait_until(lambda: len(stack.site.keys()) >= 2)
        assert await type_directly(port, "xy") == "refused"
        await alice.type("!")
        await alice.sync()
        await stack.site.wait_until(lambda: len(stack.site.keys()) >= 3)
        assert stack.site.keys() == "ok!"
    await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)


async def open_stream(url: str) -> ClientConnection:
    return await connect(url, subprotocols=[Subprotocol("binary")], proxy=None, max_size=None)


@pytest.mark.timeout(90)
async def test_viewers_never_lock_each_other_out(stack: FullStack) -> None:
    session = await start_form_task(stack)
    session_id = session["id"]
    # Fifty viewers are many people; as one user they would meet the per-user
    # rate and viewer limits, which operators are exempt from.
    urls = [await stream_url(stack, OPERATOR_TOKEN, session_id) for _ in range(57)]

    async def one_viewer(url: str) -> tuple[int, int]:
        async with raw_viewer(url) as viewer:
            assert viewer.client.server_init is not None
            return viewer.client.server_init.width, viewer.client.server_init.height

    sizes = await asyncio.gather(*(one_viewer(url) for url in urls[:50]))
    expected = (session["viewport"]["width"], session["viewport"]["height"])
    assert sizes == [expected] * 50

    # Six viewers that connect and never answer the edge's handshake.
    stalled = [await open_stream(url) for url in urls[50:56]]
    try:
        for connection in stalled:
            assert await connection.recv() == b"RFB 003.008\n"
        # A good viewer right after is served at once.
        assert await asyncio.wait_for(one_viewer(urls[56]), 5) == expected
        # The edge closes the stalled ones by itself.
        for connection in stalled:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(connection.recv(), VIEWER_HANDSHAKE_TIMEOUT_S + 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    finally:
        for connection in stalled:
            await connection.close()
    await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)
