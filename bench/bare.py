"""The bare stack: Xvnc, websockify and Chromium started by a plain script, no Baton.

Used beside Baton's figures in the same run: the cold start (figure 2) and the
memory of a session (figure 4).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.latency import wait_for_page
from bench.viewer import keep_reading, open_viewer
from services.display.display_argv import xvnc_argv
from services.display.slot import Viewport
from services.display.websockify_router import pick_free_port, wait_for_tcp
from services.display.x_authority import write_xauthority
from services.runtime.processes import require_binary, start_process, stop_process_group
from services.runtime.vnc_auth import write_password_file

VIEWPORT = Viewport(1280, 720)
# The bare stack runs Xvnc as Baton does, with a VNC password and an X cookie.
BARE_PASSWORD = "bare-pw1"
_CREDENTIALS = Path(tempfile.mkdtemp(prefix="baton-bench-bare-"))
atexit.register(shutil.rmtree, _CREDENTIALS, True)


def bare_credentials(display: int) -> tuple[Path, Path]:
    """The password file and the Xauthority file of a bare display."""
    password_file = _CREDENTIALS / f"{display}.passwd"
    xauthority = _CREDENTIALS / f"{display}.xauthority"
    write_password_file(password_file, BARE_PASSWORD)
    write_xauthority(xauthority, display)
    return password_file, xauthority


def bare_chromium_argv(chromium: str, profile: Path, url: str) -> list[str]:
    """Chromium as a plain script run as root would start it: Chromium's defaults
    (the lean browser of figure 5 is measured against them), without its sandbox,
    which does not start as root, with the window filling the display and no
    first-run dialog over the page, so that both show the same pixels."""
    return [
        chromium,
        "--no-sandbox",
        "--no-first-run",
        "--no-default-browser-check",
        "--window-position=0,0",
        f"--window-size={VIEWPORT.width},{VIEWPORT.height}",
        f"--user-data-dir={profile}",
        url,
    ]


def websockify_argv(port: int, target: str) -> list[str]:
    """One websockify: `target` is host:port, or a token directory for one per host."""
    if target.startswith("/"):
        routing = ["--token-plugin", "TokenFileName", "--token-source", target]
        return [sys.executable, "-m", "websockify", *routing, f"127.0.0.1:{port}"]
    return [sys.executable, "-m", "websockify", f"127.0.0.1:{port}", target]


@dataclass
class BareSession:
    xvnc: asyncio.subprocess.Process
    chromium: asyncio.subprocess.Process
    profile: Path
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def stop(self) -> None:
        await stop_process_group(self.chromium, 2.0)
        await stop_process_group(self.xvnc, 2.0)
        for process in self.processes:
            await stop_process_group(process, 2.0)
        shutil.rmtree(self.profile, ignore_errors=True)


async def start_display(display: int, vnc_port: int) -> asyncio.subprocess.Process:
    xvnc = require_binary("Xvnc", "tigervnc-standalone-server")
    password_file, xauthority = bare_credentials(display)
    process = await start_process(
        xvnc_argv(xvnc, display, VIEWPORT, vnc_port, password_file, xauthority)
    )
    await wait_for_tcp(vnc_port, time.monotonic() + 10, process)
    return process


async def start_chromium(display: int, url: str) -> tuple[asyncio.subprocess.Process, Path]:
    chromium = require_binary("chromium", "chromium")
    profile = Path(tempfile.mkdtemp(prefix="baton-bench-chromium-"))
    env = {
        **os.environ,
        "DISPLAY": f":{display}",
        "XAUTHORITY": str(_CREDENTIALS / f"{display}.xauthority"),
    }
    process = await start_process(bare_chromium_argv(chromium, profile, url), env=env)
    return process, profile


async def cold_start(display: int, vnc_port: int, url: str) -> float:
    """Seconds from nothing to a viewer (through a fresh websockify) seeing the page."""
    began = time.perf_counter()
    xvnc = await start_display(display, vnc_port)
    session = None
    port = pick_free_port()
    websockify = await start_process(websockify_argv(port, f"127.0.0.1:{vnc_port}"))
    try:
        chromium, profile = await start_chromium(display, url)
        session = BareSession(xvnc, chromium, profile, [websockify])
        await wait_for_tcp(port, time.monotonic() + 10, websockify)
        async with open_viewer(
            f"ws://127.0.0.1:{port}/websockify", password=BARE_PASSWORD
        ) as viewer:
            await wait_for_page(viewer)
            seen = time.perf_counter()
    finally:
        if session is not None:
            await session.stop()
        else:
            await stop_process_group(websockify, 2.0)
            await stop_process_group(xvnc, 2.0)
    return seen - began


@dataclass
class BareHost:
    """Bare sessions behind one websockify routing by token, each with one viewer."""

    websockify: asyncio.subprocess.Process
    port: int
    tokens: Path
    viewers: contextlib.AsyncExitStack
    sessions: list[BareSession] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    def roots(self) -> list[int]:
        pids = [self.websockify.pid]
        for session in self.sessions:
            pids += [session.xvnc.pid, session.chromium.pid]
        return pids

    async def add(self, display: int, vnc_port: int, url: str) -> None:
        """One more session on `url`, and a viewer that has seen the page."""
        xvnc = await start_display(display, vnc_port)
        chromium, profile = await start_chromium(display, url)
        self.sessions.append(BareSession(xvnc, chromium, profile))
        (self.tokens / f"bare{display}").write_text(f"127.0.0.1:{vnc_port}\n")
        ws_url = f"ws://127.0.0.1:{self.port}/websockify?token=bare{display}"
        viewer = await self.viewers.enter_async_context(open_viewer(ws_url, password=BARE_PASSWORD))
        await asyncio.wait_for(wait_for_page(viewer), 60)
        self.readers.append(asyncio.create_task(keep_reading(viewer)))


@contextlib.asynccontextmanager
async def bare_host() -> AsyncIterator[BareHost]:
    """A websockify routing by token, ready for `BareHost.add`; all stopped at the end."""
    tokens = Path(tempfile.mkdtemp(prefix="baton-bench-tokens-"))
    port = pick_free_port()
    websockify = await start_process(websockify_argv(port, str(tokens)))
    async with contextlib.AsyncExitStack() as stack:
        host = BareHost(websockify, port, tokens, stack)

        async def stop_all() -> None:
            for reader in host.readers:
                reader.cancel()
            await asyncio.gather(*host.readers, return_exceptions=True)
            for session in host.sessions:
                await session.stop()
            await stop_process_group(websockify, 2.0)
            shutil.rmtree(tokens, ignore_errors=True)

        stack.push_async_callback(stop_all)
        await wait_for_tcp(port, time.monotonic() + 10, websockify)
        yield host
