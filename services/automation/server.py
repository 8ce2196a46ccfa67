"""Start the automation gRPC server (tests bind 127.0.0.1:0)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping

import grpc

from baton.automation.v1 import automation_pb2, automation_pb2_grpc
from services.automation.browser_prewarm import BrowserPrewarmer
from services.automation.browser_sessions import BrowserSessions, LlmPlannerFactory
from services.automation.browser_user import BrowserUsers
from services.automation.chromium import PlaywrightDriver
from services.automation.display_feed import DisplaySlotFeed
from services.automation.input_drain import XDOTOOL
from services.automation.llm_planner import HttpChatClient, LlmPlanner
from services.automation.planners import Planner
from services.automation.profile_reaper import reap_orphans
from services.automation.servicer import AutomationServicer
from services.automation.settings import AutomationSettings
from services.runtime.grpc_server import RunningServer, start_server
from services.runtime.processes import MissingBinary, require_binary

SERVICE_NAME = automation_pb2.DESCRIPTOR.services_by_name["AutomationService"].full_name


def llm_planner_factory(settings: AutomationSettings) -> LlmPlannerFactory:
    llm = settings.llm
    if not llm.configured:
        return None
    client = HttpChatClient(llm)

    def make(task_text: str) -> Planner:
        return LlmPlanner(client, llm.model, task_text)

    return make


async def start_automation_server(
    settings: AutomationSettings,
    address: str = "127.0.0.1:0",
    environ: Mapping[str, str] | None = None,
) -> RunningServer:
    """Start the Playwright driver, the pre-warming of browsers and the gRPC server.

    Stopping it closes every browser, pre-warmed or not, and deletes their profiles.
    """
    if not os.access(settings.chromium_path, os.X_OK):
        raise MissingBinary(
            f"Chromium not found at {settings.chromium_path}: install the Debian package "
            "chromium (apt-get install chromium) or set BATON_CHROMIUM_PATH"
        )
    if settings.input_drain_ms > 0:
        # The input drain moves the pointer with it (input_drain.py).
        require_binary(XDOTOOL, "xdotool")
    # What a crashed predecessor left: its browsers, profiles and temp dirs.
    await asyncio.to_thread(reap_orphans, settings.profile_root)
    driver = PlaywrightDriver(
        settings.chromium_path,
        settings.profile_root,
        os.environ if environ is None else environ,
        BrowserUsers.for_this_process(settings.browser_uid_base),
    )
    await driver.start()
    sessions: BrowserSessions
    prewarmer = BrowserPrewarmer(driver, lambda display: sessions.uses_display(display))
    sessions = BrowserSessions(settings, driver, llm_planner_factory(settings), prewarmer)

    def register(server: grpc.aio.Server) -> None:
        automation_pb2_grpc.add_AutomationServiceServicer_to_server(
            AutomationServicer(sessions, prewarmer.ready), server
        )

    try:
        running = await start_server(
            register, [SERVICE_NAME], address, settings.internal_token, settings.grpc_tls
        )
    except BaseException:
        await driver.stop()
        raise
    feed: asyncio.Task[None] | None = None
    if settings.display_address is not None:
        follower = DisplaySlotFeed(
            settings.display_address, prewarmer, settings.internal_token, settings.grpc_tls
        )
        feed = asyncio.create_task(follower.run(), name="display-slot-feed")

    async def close_browsers() -> None:
        if feed is not None:
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed
        await prewarmer.close()
        await sessions.close_all()
        await driver.stop()

    running.on_stop.append(close_browsers)
    return running
