"""Pre-warmed browsers end to end: a real display service (Xvnc), Chromium, gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from baton.automation.v1 import automation_pb2 as pb
from baton.automation.v1 import automation_pb2_grpc as pb_grpc
from baton.display.v1 import display_pb2, display_pb2_grpc
from services.automation.proc_table import list_processes
from services.automation.server import start_automation_server
from services.automation.settings import AutomationSettings
from services.display.server import start_display_server
from services.display.settings import Backend, DisplaySettings, NumberRange
from services.runtime.grpc_client import open_channel
from services.runtime.grpc_server import RunningServer
from tests.automation.conftest import TaskStream
from tests.automation.support import PageServer
from tests.conftest import INTERNAL_TOKEN, free_port, require_binary

pytestmark = pytest.mark.asyncio(loop_scope="module")

VIEWPORT = display_pb2.Viewport(width=1280, height=720)


@dataclass
class DisplayHost:
    running: RunningServer
    stub: display_pb2_grpc.DisplayServiceAsyncStub

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.running.port}"


def display_settings(state_dir: Path) -> DisplaySettings:
    return DisplaySettings(
        internal_token=INTERNAL_TOKEN,
        host_id="prewarm-test",
        backend=Backend.XVNC,
        max_slots=3,
        warm_slots=1,
        displays=NumberRange(700, 749),
        vnc_ports=NumberRange(18700, 18749),
        state_dir=state_dir,
        stop_grace=1.0,
    )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def host(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DisplayHost]:
    require_binary("Xvnc", "tigervnc-standalone-server")
    require_binary("chromium", "chromium")
    running = await start_display_server(display_settings(tmp_path_factory.mktemp("display")))
    channel = open_channel(f"127.0.0.1:{running.port}", INTERNAL_TOKEN)
    try:
        yield DisplayHost(running, display_pb2_grpc.DisplayServiceStub(channel))
    finally:
        await channel.close(None)
        await running.stop()


@dataclass
class Automation:
    running: RunningServer
    stub: pb_grpc.AutomationServiceAsyncStub
    profile_root: Path
    stopped: bool = False

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.running.stop(grace=1)


@pytest_asyncio.fixture(loop_scope="module")
async def automation(host: DisplayHost, tmp_path: Path) -> AsyncIterator[Automation]:
    async with automation_for(host.address, tmp_path / "profiles") as running:
        yield running


@contextlib.asynccontextmanager
async def automation_for(display_address: str, profile_root: Path) -> AsyncIterator[Automation]:
    settings = AutomationSettings(
        internal_token=INTERNAL_TOKEN, profile_root=profile_root, display_address=display_address
    )
    running = await start_automation_server(settings)
    channel = open_channel(f"127.0.0.1:{running.port}", INTERNAL_TOKEN)
    automation = Automation(running, pb_grpc.AutomationServiceStub(channel), profile_root)
    try:
        yield automation
    finally:
        await channel.close(None)
        await automation.stop()


async def until(predicate: Callable[[], bool], within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def warm_browsers(automation: Automation, count: int) -> list[pb.WarmBrowser]:
    """The pre-warmed browsers, once there are `count` of them."""
    deadline = time.monotonic() + 30
    while True:
        listing = await automation.stub.ListWarmBrowsers(pb.ListWarmBrowsersRequest())
        if len(listing.browsers) == count:
            return list(listing.browsers)
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} warm browsers, have {listing.browsers}")
        await asyncio.sleep(0.05)


def chromiums(profile_root: Path) -> dict[int, Path]:
    """Live Chromium browser processes with a profile under `profile_root`: pid -> profile."""
    found = {}
    for entry in list_processes():
        if entry.zombie or any(arg.startswith("--type=") for arg in entry.argv):
            continue
        for arg in entry.argv:
            if arg.startswith(f"--user-data-dir={profile_root}/"):
                found[entry.pid] = Path(arg.split("=", 1)[1])
    return found


def display_of(pid: int) -> str:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for item in environ:
        if item.startswith(b"DISPLAY="):
            return item.split(b"=", 1)[1].decode()
    return ""


async def test_start_task_on_a_warm_slot_adopts_its_browser(
    host: DisplayHost, automation: Automation, pages: PageServer
) -> None:
    [warm] = await warm_browsers(automation, 1)
    assert display_of(warm.pid) == warm.display

    allocated = await host.stub.AllocateSlot(
        display_pb2.AllocateSlotRequest(session_id="adopt", viewport=VIEWPORT)
    )
    assert allocated.from_warm_pool and allocated.slot.id == warm.slot_id
    request = pb.StartTaskRequest(
        session_id="adopt",
        display=allocated.slot.display,
        viewport=VIEWPORT,
        url=f"{pages.base_url}/form",
        planner=pb.PLANNER_NONE,
    )
    final = await TaskStream.open(automation.stub, request).final()
    assert final.status == pb.TASK_STATUS_COMPLETED, final.reason

    state = await automation.stub.GetPageState(pb.GetPageStateRequest(session_id="adopt"))
    assert (state.url, state.title) == (f"{pages.base_url}/form", "Sign up")
    # The session's page is in the pre-warmed Chromium: no other one on the display.
    on_display = [
        pid for pid in chromiums(automation.profile_root) if display_of(pid) == warm.display
    ]
    assert on_display == [warm.pid]

    await automation.stub.CloseBrowser(pb.CloseBrowserRequest(session_id="adopt"))
    await host.stub.ReleaseSlot(display_pb2.ReleaseSlotRequest(slot_id=allocated.slot.id))
    await until(lambda: warm.pid not in chromiums(automation.profile_root))


async def test_releasing_a_warm_slot_closes_its_browser_and_deletes_the_profile(
    host: DisplayHost, automation: Automation
) -> None:
    [warm] = await warm_browsers(automation, 1)
    profile = chromiums(automation.profile_root)[warm.pid]
    assert profile.is_dir()

    await host.stub.ReleaseSlot(display_pb2.ReleaseSlotRequest(slot_id=warm.slot_id))

    await until(lambda: warm.pid not in chromiums(automation.profile_root))
    await until(lambda: not profile.exists())
    # The pool refills and the new warm slot gets its own browser.
    [rewarmed] = await warm_browsers(automation, 1)
    assert rewarmed.slot_id != warm.slot_id and rewarmed.pid != warm.pid


async def test_stopping_the_service_leaves_no_browser_and_no_profile(
    host: DisplayHost, automation: Automation
) -> None:
    await warm_browsers(automation, 1)
    assert chromiums(automation.profile_root)

    await automation.stop()

    assert chromiums(automation.profile_root) == {}
    assert list(automation.profile_root.iterdir()) == []


async def test_pre_warming_follows_a_display_service_that_starts_late_and_restarts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="services.automation.display_feed")
    address = f"127.0.0.1:{free_port()}"
    settings = display_settings(tmp_path / "display")
    async with automation_for(address, tmp_path / "profiles") as automation:
        display = await start_display_server(settings, address)
        try:
            [first] = await warm_browsers(automation, 1)
        finally:
            await display.stop(grace=1)
        # Its X server is gone: the browser is cleaned up, profile and all.
        await until(lambda: chromiums(automation.profile_root) == {})
        await until(lambda: list(automation.profile_root.iterdir()) == [])

        display = await start_display_server(settings, address)
        try:
            [second] = await warm_browsers(automation, 1)
            assert second.pid != first.pid
            await automation.stop()
        finally:
            await display.stop(grace=1)
    # One warning per outage (before the first start, after the stop), not per attempt.
    warnings = [r for r in caplog.records if "not pre-warmed" in r.getMessage()]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]
