"""Issue 12, findings 1 and 6: a slot's VNC server and X display need Baton's credentials.

A local process without the slot's password cannot complete an RFB handshake
on the VNC port; without the display's cookie an X client is refused; failed
and stalled handshakes never lock the others out (no Xvnc blacklist).
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from baton.display.v1 import display_pb2
from services.display.rfb_client import RfbClient, RfbError, TcpChannel
from services.display.server import start_display_server
from services.display.settings import Backend, DisplaySettings, NumberRange
from services.runtime.grpc_client import open_channel
from services.runtime.processes import require_binary
from tests.conftest import INTERNAL_TOKEN
from tests.display.test_display_service import DisplayHost, require_backend

# This file's own display numbers and VNC ports (issue 12 helpers' ranges).
DISPLAYS = {Backend.XVNC: NumberRange(800, 804), Backend.XVFB_X11VNC: NumberRange(805, 809)}
pytestmark = pytest.mark.asyncio(loop_scope="module")
VNC_PORTS = {
    Backend.XVNC: NumberRange(19000, 19004),
    Backend.XVFB_X11VNC: NumberRange(19005, 19009),
}


async def tcp_handshake(port: int, password: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await asyncio.wait_for(
            RfbClient(TcpChannel(reader, writer)).handshake(password=password), 5
        )
    finally:
        writer.close()


@pytest_asyncio.fixture(
    scope="module", loop_scope="module", params=list(Backend), ids=lambda b: b.value
)
async def host(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DisplayHost]:
    backend: Backend = request.param
    require_backend(backend)
    settings = DisplaySettings(
        internal_token=INTERNAL_TOKEN,
        host_id="credentials-host",
        backend=backend,
        max_slots=2,
        warm_slots=0,
        displays=DISPLAYS[backend],
        vnc_ports=VNC_PORTS[backend],
        state_dir=tmp_path_factory.mktemp(f"credentials-{backend.value}"),
        stop_grace=1.0,
    )
    running = await start_display_server(settings)
    channel = open_channel(f"127.0.0.1:{running.port}", INTERNAL_TOKEN)
    try:
        yield DisplayHost(settings, running, channel)
    finally:
        await channel.close(None)
        await running.stop()


def vnc_port(slot: display_pb2.Slot) -> int:
    return int(slot.vnc_address.rpartition(":")[2])


async def xdpyinfo(display: str, env: dict[str, str]) -> int:
    process = await asyncio.create_subprocess_exec(
        require_binary("xdpyinfo", "x11-utils"),
        "-display",
        display,
        env={"PATH": os.environ["PATH"], **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await process.wait()


async def test_vnc_needs_the_slot_password(host: DisplayHost) -> None:
    slot = (await host.allocate(800, 600)).slot
    try:
        assert len(slot.vnc_password) == 8
        password_file = os.path.join(os.path.dirname(slot.xauthority), "vnc.passwd")
        assert stat.S_IMODE(os.stat(password_file).st_mode) == 0o600
        # No security type None any more, and a wrong password is refused.
        with pytest.raises(RfbError, match="does not offer security type None"):
            await tcp_handshake(vnc_port(slot), "")
        with pytest.raises(RfbError, match=r"security handshake failed|closed"):
            await tcp_handshake(vnc_port(slot), "wrong!!!")
        # Positive marker: with the slot's password the same path works.
        await tcp_handshake(vnc_port(slot), slot.vnc_password)
    finally:
        await host.release(slot.id)


async def test_x_clients_need_the_display_cookie(host: DisplayHost, tmp_path: Path) -> None:
    slot = (await host.allocate(800, 600)).slot
    try:
        assert stat.S_IMODE(os.stat(slot.xauthority).st_mode) == 0o600
        assert await xdpyinfo(slot.display, {"HOME": str(tmp_path)}) != 0
        empty = tmp_path / "empty-xauthority"
        empty.write_bytes(b"")
        assert await xdpyinfo(slot.display, {"XAUTHORITY": str(empty)}) != 0
        assert await xdpyinfo(slot.display, {"XAUTHORITY": slot.xauthority}) == 0
    finally:
        await host.release(slot.id)


async def test_failed_and_stalled_handshakes_lock_nobody_out(host: DisplayHost) -> None:
    slot = (await host.allocate(800, 600)).slot
    stalled: list[asyncio.StreamWriter] = []
    try:
        for _ in range(6):
            _, writer = await asyncio.open_connection("127.0.0.1", vnc_port(slot))
            stalled.append(writer)
        for _ in range(6):
            with pytest.raises(RfbError):
                await tcp_handshake(vnc_port(slot), "wrong!!!")
        # Right after (Xvnc's default blacklist would refuse for 10 s here).
        await tcp_handshake(vnc_port(slot), slot.vnc_password)
    finally:
        for writer in stalled:
            writer.close()
        await host.release(slot.id)
