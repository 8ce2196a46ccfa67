"""The whole stack as `make run` starts it: four services, each its own process.

Ports are free ones picked here; X displays and VNC ports come from the bench's
own ranges (displays 500-599, VNC ports 18500-18599), apart from the tests'.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import grpc
import jwt

from baton.automation.v1 import automation_pb2, automation_pb2_grpc
from baton.client import BatonClient
from baton.client.types import ControlAction
from baton.display.v1 import display_pb2, display_pb2_grpc
from baton.session.v1 import session_pb2, session_pb2_grpc
from services.display.websockify_router import pick_free_port
from services.runtime.grpc_client import is_serving, open_channel
from services.runtime.internal_auth import InternalToken
from services.runtime.processes import start_process, stop_process_group

API_TOKEN = "bench-operator-token"
JWT_SECRET = "bench-jwt-secret-of-at-least-32-bytes"
USER_ID = "bench-user"
READY_TIMEOUT_S = 90.0
OPERATOR = session_pb2.Actor(user_id="operator", operator=True)


@dataclass(frozen=True)
class StackConfig:
    backend: str = "xvnc"
    warm_slots: int = 0
    max_slots: int = 8
    # Inclusive ranges inside 500-599 / 18500-18599.
    displays: tuple[int, int] = (500, 549)
    vnc_ports: tuple[int, int] = (18500, 18549)
    # Where viewers reach the edge and the slots' websockify: loopback, or the
    # root end of figure 2's emulated link (bench/link.py).
    viewer_host: str = "127.0.0.1"


def stack_env(
    config: StackConfig, ports: Mapping[str, int], work_dir: Path, inherited: Mapping[str, str]
) -> dict[str, str]:
    """The environment every service of one bench stack gets."""
    env = {name: value for name, value in inherited.items() if not name.startswith("BATON_")}
    env.update(
        {
            "BATON_API_TOKEN": API_TOKEN,
            "BATON_JWT_SECRET": JWT_SECRET,
            "BATON_EDGE_HOST": config.viewer_host,
            "BATON_WEBSOCKIFY_HOST": config.viewer_host,
            "BATON_EDGE_PORT": str(ports["edge"]),
            "BATON_SESSION_PORT": str(ports["session"]),
            "BATON_DISPLAY_PORT": str(ports["display"]),
            "BATON_AUTOMATION_PORT": str(ports["automation"]),
            "BATON_DISPLAY_BACKEND": config.backend,
            "BATON_WARM_SLOTS": str(config.warm_slots),
            "BATON_MAX_SLOTS": str(config.max_slots),
            "BATON_DISPLAY_NUMBERS": "{}-{}".format(*config.displays),
            "BATON_VNC_PORTS": "{}-{}".format(*config.vnc_ports),
            "BATON_DISPLAY_STATE_DIR": str(work_dir / "display"),
            "BATON_DISPLAY_STOP_GRACE": "1",
            "BATON_PROFILE_ROOT": str(work_dir / "profiles"),
            "BATON_HOST_ID": "bench",
            "BATON_IDLE_TIMEOUT_S": "3600",
            # Density's sessions are FINISHED (a page, no steps): ended after two
            # minutes by default, they would close while figure 4 still counts them.
            "BATON_FINISHED_IDLE_S": "3600",
            # One bench user starts and watches every session: the host's limits
            # are measured, not the per-user ones (sessions, viewers, rate).
            "BATON_MAX_SESSIONS_PER_USER": "0",
            "BATON_RATE_LIMIT_PER_S": "1000",
            "BATON_RATE_LIMIT_BURST": "1000",
            "BATON_MAX_VIEWERS_PER_USER": "1000",
            "BATON_LOG_LEVEL": "WARNING",
            "BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value,
        }
    )
    return env


# Fresh per bench run; the services get it in their environment.
INTERNAL_TOKEN = InternalToken.generate()

# The order `make run` uses; stopped in reverse.
SERVICES = ("display", "automation", "session", "edge")


def user_token(user_id: str = USER_ID) -> str:
    # The edge refuses user JWTs without exp (or living longer than a day).
    now = int(time.time())
    claims = {"sub": user_id, "iat": now, "exp": now + 6 * 3600}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


@dataclass
class BenchStack:
    config: StackConfig
    ports: dict[str, int]
    processes: dict[str, asyncio.subprocess.Process]
    http: aiohttp.ClientSession
    sessions: session_pb2_grpc.SessionServiceAsyncStub
    display: display_pb2_grpc.DisplayServiceAsyncStub
    automation: automation_pb2_grpc.AutomationServiceAsyncStub
    token: str

    @property
    def edge_url(self) -> str:
        return f"http://{self.config.viewer_host}:{self.ports['edge']}"

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.processes.items()}

    @property
    def client(self) -> BatonClient:
        """baton.client as the bench user, on the stack's HTTP session."""
        return BatonClient(self.edge_url, self.token, http=self.http)

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        return await self.client.request(method, path, body)

    async def create(self, url: str, steps: list[dict[str, Any]] | None = None) -> str:
        session = await self.client.create_session(
            "bench", url, steps=steps or None, max_steps=len(steps) + 1 if steps else None
        )
        return session["id"]

    async def control(self, session_id: str, action: ControlAction) -> dict[str, Any]:
        return cast(dict[str, Any], await self.client.change_control(session_id, action))

    async def stream_url(self, session_id: str) -> str:
        return (await self.client.get_stream_url(session_id))["url"]

    async def end(self, session_id: str) -> None:
        await self.client.end_session(session_id)

    async def session(self, session_id: str) -> session_pb2.Session:
        answer = await self.sessions.GetSession(
            session_pb2.GetSessionRequest(session_id=session_id, actor=OPERATOR)
        )
        return answer.session

    async def bare_url(self, session_id: str) -> tuple[str, str]:
        """The slot's own websockify URL and VNC password: the display without the edge."""
        placement = (await self.session(session_id)).placement
        slot = await self.display.GetSlot(display_pb2.GetSlotRequest(slot_id=placement.slot_id))
        return placement.websocket_url, slot.slot.vnc_password

    async def wait_warm(self, count: int) -> None:
        """Until `count` warm slots are ready, each with its pre-warmed Chromium up."""
        while True:
            capacity = await self.display.GetCapacity(display_pb2.GetCapacityRequest())
            if capacity.warm_slots_ready >= count:
                warm = await self.automation.ListWarmBrowsers(
                    automation_pb2.ListWarmBrowsersRequest()
                )
                if len(warm.browsers) >= count:
                    return
            await asyncio.sleep(0.02)


async def _http_ok(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _wait_ready(
    name: str,
    host: str,
    port: int,
    process: asyncio.subprocess.Process,
    http: aiohttp.ClientSession,
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode}")
        if name == "edge":
            ready = await _http_ok(http, f"http://{host}:{port}/healthz")
        else:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                ready = await is_serving(channel)
        if ready:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{name} was not ready within {READY_TIMEOUT_S:g} s")


def make_dirs(work_dir: Path) -> None:
    (work_dir / "profiles").mkdir(parents=True, exist_ok=True)


@contextlib.asynccontextmanager
async def running_stack(config: StackConfig, work_dir: Path) -> AsyncIterator[BenchStack]:
    """Start the four services as separate processes; stop them all at the end."""
    make_dirs(work_dir)
    ports = {name: pick_free_port() for name in SERVICES}
    env = stack_env(config, ports, work_dir, os.environ)
    processes: dict[str, asyncio.subprocess.Process] = {}
    async with contextlib.AsyncExitStack() as stack:
        http = aiohttp.ClientSession()
        stack.push_async_callback(http.close)

        async def stop_all() -> None:
            for name in reversed(list(processes)):
                await stop_process_group(processes[name], 10.0)

        stack.push_async_callback(stop_all)
        for name in SERVICES:
            log = os.open(work_dir / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                processes[name] = await start_process(
                    [sys.executable, "-m", f"services.{name}"], env=env, stdout=log, stderr=log
                )
            finally:
                os.close(log)
            await _wait_ready(name, config.viewer_host, ports[name], processes[name], http)
        session_channel = open_channel(f"127.0.0.1:{ports['session']}", INTERNAL_TOKEN)
        stack.push_async_callback(session_channel.close, None)
        display_channel = open_channel(f"127.0.0.1:{ports['display']}", INTERNAL_TOKEN)
        stack.push_async_callback(display_channel.close, None)
        automation_channel = open_channel(f"127.0.0.1:{ports['automation']}", INTERNAL_TOKEN)
        stack.push_async_callback(automation_channel.close, None)
        yield BenchStack(
            config=config,
            ports=ports,
            processes=processes,
            http=http,
            sessions=session_pb2_grpc.SessionServiceStub(session_channel),
            display=display_pb2_grpc.DisplayServiceStub(display_channel),
            automation=automation_pb2_grpc.AutomationServiceStub(automation_channel),
            token=user_token(),
        )
