"""The display service with real Xvfb, x11vnc, Xvnc and websockify, over gRPC.

One server per backend for the module; each test leaves the server with no
held slot (the warm pool refills in the background).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from baton.display.v1 import display_pb2, display_pb2_grpc
from services.display.rfb_client import RfbError, open_rfb
from services.display.server import start_display_server
from services.display.settings import Backend, DisplaySettings, NumberRange
from services.display.state_dir import ProcessRecord
from services.runtime.grpc_client import open_channel
from services.runtime.grpc_server import RunningServer
from tests.conftest import INTERNAL_TOKEN, require_binary
from tests.display.host_inspection import (
    leftovers,
    listening_addresses,
    slot_record,
    wait_until_gone,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_SLOTS = 5
WARM_SLOTS = 2
# Displays 200-299 are this suite's; each backend's server gets its own part.
DISPLAYS = {Backend.XVNC: NumberRange(200, 219), Backend.XVFB_X11VNC: NumberRange(220, 239)}
VNC_PORTS = {
    Backend.XVNC: NumberRange(17200, 17219),
    Backend.XVFB_X11VNC: NumberRange(17220, 17239),
}


def require_backend(backend: Backend) -> None:
    if backend is Backend.XVNC:
        require_binary("Xvnc", "tigervnc-standalone-server")
    else:
        require_binary("Xvfb", "xvfb")
        require_binary("x11vnc", "x11vnc")


class DisplayHost:
    """A running display service and a client for it."""

    def __init__(
        self,
        settings: DisplaySettings,
        running: RunningServer,
        channel: grpc.aio.Channel,
    ) -> None:
        self.settings = settings
        self.running = running
        self.channel = channel
        self.stub = display_pb2_grpc.DisplayServiceStub(channel)

    async def allocate(
        self, width: int = 0, height: int = 0, session_id: str = "s"
    ) -> display_pb2.AllocateSlotResponse:
        request = display_pb2.AllocateSlotRequest(session_id=session_id)
        if width:
            request.viewport.CopyFrom(display_pb2.Viewport(width=width, height=height))
        return await self.stub.AllocateSlot(request)

    async def release(self, slot_id: str) -> None:
        await self.stub.ReleaseSlot(display_pb2.ReleaseSlotRequest(slot_id=slot_id))

    async def held_slots(self) -> list[display_pb2.Slot]:
        listing = await self.stub.ListSlots(display_pb2.ListSlotsRequest())
        return [s for s in listing.slots if s.session_id]

    async def release_all_held(self) -> None:
        for slot in await self.held_slots():
            await self.release(slot.id)

    async def wait_warm_ready(self, count: int) -> None:
        while True:
            capacity = await self.stub.GetCapacity(display_pb2.GetCapacityRequest())
            if capacity.warm_slots_ready >= count:
                return
            await asyncio.sleep(0.02)


@pytest_asyncio.fixture(
    scope="module",
    loop_scope="module",
    params=[Backend.XVNC, Backend.XVFB_X11VNC],
    ids=lambda b: b.value,
)
async def host(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DisplayHost]:
    backend: Backend = request.param
    require_backend(backend)
    settings = DisplaySettings(
        internal_token=INTERNAL_TOKEN,
        host_id="test-host",
        backend=backend,
        max_slots=MAX_SLOTS,
        warm_slots=WARM_SLOTS,
        displays=DISPLAYS[backend],
        vnc_ports=VNC_PORTS[backend],
        state_dir=tmp_path_factory.mktemp(f"display-{backend.value}"),
        stop_grace=1.0,
    )
    running = await start_display_server(settings)
    channel = open_channel(f"127.0.0.1:{running.port}", INTERNAL_TOKEN)
    try:
        yield DisplayHost(settings, running, channel)
    finally:
        await channel.close(None)
        await running.stop()


def vnc_pid(host: DisplayHost, slot_id: str) -> int:
    record = slot_record(host.settings.state_dir, slot_id)
    # The VNC server is the last program a slot starts (Xvnc is the only one).
    return record.processes[-1].pid


async def test_five_concurrent_slots_serve_a_full_framebuffer_of_their_size(
    host: DisplayHost,
) -> None:
    sizes = [(1280, 720), (800, 600), (1024, 768), (640, 480), (1920, 1080)]
    responses = await asyncio.gather(*(host.allocate(w, h, f"session-{w}") for w, h in sizes))
    try:
        assert len({r.slot.display for r in responses}) == len(sizes)

        async def read(slot: display_pb2.Slot) -> tuple[int, int, int]:
            async with open_rfb(slot.websocket_url) as client:
                await client.handshake(password=slot.vnc_password)
                framebuffer = await client.read_framebuffer()
            return framebuffer.width, framebuffer.height, len(framebuffer.pixels)

        frames = await asyncio.gather(*(read(r.slot) for r in responses))
        assert frames == [(w, h, w * h * 4) for w, h in sizes]
        for response, (width, height) in zip(responses, sizes, strict=True):
            slot = response.slot
            assert slot.state == display_pb2.SLOT_STATE_READY
            assert (slot.viewport.width, slot.viewport.height) == (width, height)
            assert slot.websocket_url.startswith("ws://127.0.0.1:")
            port = int(slot.vnc_address.rpartition(":")[2])
            # VNC (password only) is reachable from loopback only.
            addresses = listening_addresses(port)
            assert addresses
            assert all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses
    finally:
        await host.release_all_held()


async def test_release_leaves_no_process_lock_or_socket(host: DisplayHost) -> None:
    slot = (await host.allocate(1024, 768)).slot
    display = int(slot.display.lstrip(":"))
    pids = [p.pid for p in slot_record(host.settings.state_dir, slot.id).processes]
    vnc_port = int(slot.vnc_address.rpartition(":")[2])
    token_file = host.settings.state_dir / "tokens" / slot.websocket_url.rpartition("token=")[2]
    assert leftovers(display, pids, host.settings.state_dir, slot.id) != []
    assert token_file.exists()
    # An X client (as Chromium will be) with the display's cookie can use it.
    xdpyinfo = await asyncio.create_subprocess_exec(
        require_binary("xdpyinfo", "x11-utils"),
        "-display",
        slot.display,
        env={"PATH": os.environ["PATH"], "XAUTHORITY": slot.xauthority},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    info, _ = await xdpyinfo.communicate()
    assert xdpyinfo.returncode == 0
    assert b"dimensions:    1024x768 pixels" in info

    await host.release(slot.id)

    assert leftovers(display, pids, host.settings.state_dir, slot.id) == []
    assert not token_file.exists()
    assert listening_addresses(vnc_port) == set()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await host.stub.GetSlot(display_pb2.GetSlotRequest(slot_id=slot.id))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(RfbError):
        async with open_rfb(slot.websocket_url, open_timeout=2) as client:
            await client.handshake(password=slot.vnc_password)


async def test_a_killed_vnc_server_fails_the_slot_and_cleans_it(host: DisplayHost) -> None:
    watch = host.stub.WatchSlots(display_pb2.WatchSlotsRequest())
    await watch.initial_metadata()
    slot = (await host.allocate(800, 600, "doomed")).slot
    display = int(slot.display.lstrip(":"))
    pids = [p.pid for p in slot_record(host.settings.state_dir, slot.id).processes]
    try:
        os.kill(vnc_pid(host, slot.id), signal.SIGKILL)

        async def next_failure() -> display_pb2.SlotFailed:
            async for event in watch:
                if event.WhichOneof("event") == "failed" and event.failed.slot.id == slot.id:
                    return event.failed
            raise AssertionError("WatchSlots ended")

        failed = await asyncio.wait_for(next_failure(), timeout=2.0)
        assert failed.slot.state == display_pb2.SLOT_STATE_FAILED
        assert "exited" in failed.reason
        await wait_until_gone(display, pids, host.settings.state_dir, slot.id)
        got = await host.stub.GetSlot(display_pb2.GetSlotRequest(slot_id=slot.id))
        assert got.slot.state == display_pb2.SLOT_STATE_FAILED
    finally:
        watch.cancel()
        await host.release(slot.id)


async def test_allocation_beyond_capacity_is_refused_until_a_release(host: DisplayHost) -> None:
    held = await asyncio.gather(*(host.allocate(session_id=f"s{i}") for i in range(MAX_SLOTS)))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await host.allocate(session_id="one-too-many")
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"all {MAX_SLOTS} slots are in use" in (caught.value.details() or "")
        capacity = await host.stub.GetCapacity(display_pb2.GetCapacityRequest())
        assert (capacity.used_slots, capacity.free_slots) == (MAX_SLOTS, 0)

        await host.release(held[0].slot.id)
        again = await host.allocate(800, 600, session_id="after-release")
        assert again.slot.state == display_pb2.SLOT_STATE_READY
    finally:
        await host.release_all_held()


async def test_warm_pool_hands_out_a_ready_default_size_slot(host: DisplayHost) -> None:
    await host.wait_warm_ready(WARM_SLOTS)
    listing = await host.stub.ListSlots(display_pb2.ListSlotsRequest())
    waiting = {s.id for s in listing.slots if s.warm and s.state == display_pb2.SLOT_STATE_READY}
    assert len(waiting) == WARM_SLOTS
    warm = await host.allocate(session_id="warm")
    fresh = await host.allocate(1024, 768, session_id="fresh")
    try:
        assert warm.from_warm_pool
        assert warm.slot.id in waiting and not warm.slot.warm
        assert not fresh.from_warm_pool
        assert warm.slot.session_id == "warm"
        assert (warm.slot.viewport.width, warm.slot.viewport.height) == (1280, 720)
        async with open_rfb(warm.slot.websocket_url) as client:
            init = await client.handshake(password=warm.slot.vnc_password)
        assert (init.width, init.height) == (1280, 720)
        # The pool refills in the background.
        await host.wait_warm_ready(WARM_SLOTS)
    finally:
        await host.release_all_held()


async def test_out_of_range_size_is_invalid(host: DisplayHost) -> None:
    for width, height in [(320, 240), (4000, 2160), (1280, 100)]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await host.allocate(width, height)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    largest = await host.allocate(3840, 2160)
    try:
        async with open_rfb(largest.slot.websocket_url) as client:
            init = await client.handshake(password=largest.slot.vnc_password)
        assert (init.width, init.height) == (3840, 2160)
    finally:
        await host.release(largest.slot.id)


async def test_slots_survive_a_websockify_crash(host: DisplayHost) -> None:
    slot = (await host.allocate(800, 600, "survivor")).slot
    try:
        record = ProcessRecord.from_json((host.settings.state_dir / "websockify.json").read_text())
        os.kill(record.processes[0].pid, signal.SIGKILL)
        # The service starts websockify again on the same port; the URL stays valid.
        while True:
            try:
                async with open_rfb(slot.websocket_url, open_timeout=2) as client:
                    init = await client.handshake(password=slot.vnc_password)
                break
            except RfbError:
                await asyncio.sleep(0.05)
        assert (init.width, init.height) == (800, 600)
        restarted = ProcessRecord.from_json(
            (host.settings.state_dir / "websockify.json").read_text()
        )
        assert restarted.processes[0].pid != record.processes[0].pid
    finally:
        await host.release(slot.id)
