"""kill -9 of each service under `make run`: it comes back, what it left is gone,
sessions survive a session-service crash, and a viewer reconnects."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from services.display.rfb_client import RfbClient, RfbError, WebSocketChannel
from tests.conftest import eventually, require_binary
from tests.deploy.stack_process import (
    LauncherStack,
    alive,
    listening_inodes,
    process_tree,
)

# This helper's share of the machine (tests of other stacks use other numbers).
DISPLAYS = "1000-1009"
VNC_PORTS = "19200-19209"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LauncherStack]:
    require_binary("Xvnc", "tigervnc-standalone-server")
    require_binary("chromium", "chromium")
    running = LauncherStack(
        tmp_path_factory.mktemp("crash"),
        DISPLAYS,
        VNC_PORTS,
        BATON_MAX_SLOTS="3",
        BATON_WARM_SLOTS="0",
        # The reaper (and the check for lost slots and browsers) runs every 3 s.
        BATON_IDLE_TIMEOUT_S="12",
    )
    try:
        running.wait_for_line("all services ready", 90)
        yield running
    finally:
        assert running.stop() == 0
        assert sorted(p.name for p in running.profiles.glob("*")) == []


async def view(stack: LauncherStack, session_id: str) -> None:
    """Connect a viewer through the edge and read a whole frame; like noVNC, try
    again for a while when the display is not reachable yet."""
    for _ in range(20):
        try:
            await view_once(stack, session_id)
            return
        except (RfbError, InvalidStatus, AssertionError) as error:
            last = error
            await asyncio.sleep(0.5)
    session = stack.request("GET", f"/api/browser-session/{session_id}")
    log = "".join(line for line in stack.lines if "WARNING" in line or "ERROR" in line)
    raise AssertionError(f"no viewer could connect: {last}; {session}\n{log}")


async def view_once(stack: LauncherStack, session_id: str) -> None:
    url = stack.request("GET", f"/api/browser-session/{session_id}/stream")["url"]
    async with connect(
        url, subprotocols=[Subprotocol("binary")], compression=None, max_size=None, proxy=None
    ) as connection:
        client = RfbClient(WebSocketChannel(connection))
        await client.handshake(shared=True)
        frame = await asyncio.wait_for(client.read_framebuffer(), 20)
        assert frame.width > 0


async def a_new_session_can_be_watched(stack: LauncherStack) -> None:
    # The first create after a restart works: the session service's calls wait
    # for its channel to the restarted service (services/session/grpc_workers.py).
    fresh = stack.create_session()
    await view(stack, fresh["id"])
    stack.request("DELETE", f"/api/browser-session/{fresh['id']}")


def wait_for_task(
    stack: LauncherStack, session_id: str, status: str, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        session: dict[str, Any] = stack.request("GET", f"/api/browser-session/{session_id}")
        if session["task"]["status"] == status or time.monotonic() > deadline:
            assert session["task"]["status"] == status, (session, "".join(stack.lines[-6:]))
            return session
        time.sleep(0.2)


def wait_for_session(
    stack: LauncherStack, session_id: str, state: str, timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        session: dict[str, Any] = stack.request("GET", f"/api/browser-session/{session_id}")
        if session["state"] == state or time.monotonic() > deadline:
            assert session["state"] == state, session
            return session
        time.sleep(0.2)


def kill_and_wait(stack: LauncherStack, name: str) -> tuple[set[int], set[str]]:
    """kill -9 the service; once its successor is up, what it ran and listened on."""
    pid = stack.service_pid(name)
    tree = process_tree(pid)
    sockets = listening_inodes(tree)
    assert sockets, f"{name} listened on nothing"
    mark = len(stack.lines)
    os.kill(pid, signal.SIGKILL)
    stack.wait_for_line(f"baton: {name} was killed by SIGKILL; restarting in", 10, mark)
    stack.wait_for_line(f"baton: {name} restarted", 60, mark)
    assert stack.service_pid(name) != pid
    return tree, sockets


def assert_gone(tree: set[int], sockets: set[str]) -> None:
    left = sorted(p for p in tree if alive(p))
    assert left == [], f"left running: {left}"
    # Their listening sockets are closed: no process holds them any more.
    everyone = {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}
    assert listening_inodes(everyone) & sockets == set()


def chromium_temp_dirs(stack: LauncherStack) -> list[str]:
    return sorted(
        p.name
        for pattern in ("org.chromium.Chromium.*", "baton-tmp-*")
        for p in stack.tmp.glob(pattern)
    )


@pytest.mark.timeout(150)
async def test_a_killed_display_is_restarted_and_its_x_and_vnc_servers_reaped(
    stack: LauncherStack,
) -> None:
    session = stack.create_session()
    await view(stack, session["id"])
    tree, sockets = kill_and_wait(stack, "display")
    # Xvnc and websockify included: the successor reaped them.
    assert_gone(tree, sockets)
    failed = wait_for_session(stack, session["id"], "FAILED")
    # Its Chromium dies with the X server; whichever is noticed first is said.
    assert failed["endedReason"] in ("the display crashed", "the browser crashed"), "".join(
        stack.lines
    )
    assert stack.service_pid("session") and stack.service_pid("edge")
    # The stack works again: a new session can be watched.
    await a_new_session_can_be_watched(stack)


@pytest.mark.timeout(150)
async def test_a_killed_automation_is_restarted_and_its_browsers_and_profiles_removed(
    stack: LauncherStack,
) -> None:
    session = stack.create_session()
    await view(stack, session["id"])
    profiles = list(stack.profiles.glob("baton-profile-*"))
    assert profiles, "no browser profile while a session runs"
    # Each running browser's own TMPDIR, linked from its profile (a warm browser
    # being replaced at this moment may have lost its TMPDIR already).
    temp_dirs = [Path(os.readlink(p / "baton-tmp")) for p in profiles]
    temp_dirs = [d for d in temp_dirs if d.is_dir()]
    assert temp_dirs, "no browser's TMPDIR while a session runs"
    # Chromium makes its own temporary dir there soon after it starts.
    await eventually(
        lambda: any(next(d.glob("org.chromium.Chromium.*"), None) for d in temp_dirs), 15
    )
    [hub] = stack.tmp.glob("baton-cdp-*")
    tree, sockets = kill_and_wait(stack, "automation")
    chromium = browsers_of(profiles)
    assert_gone(tree | chromium, sockets)
    assert [p for p in profiles if p.exists()] == []
    assert [d for d in temp_dirs if d.exists()] == []
    # The CDP hub's socket dir went with its service; its successor made its own.
    assert not hub.exists() and len(list(stack.tmp.glob("baton-cdp-*"))) == 1
    assert chromium_temp_dirs(stack) == []
    failed = wait_for_session(stack, session["id"], "FAILED")
    assert failed["endedReason"] in ("the browser crashed", "the automation service crashed")
    await a_new_session_can_be_watched(stack)


def browsers_of(profiles: list[Path]) -> set[int]:
    return {
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and any(str(q) in _cmd(int(p.name)) for q in profiles)
    }


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.timeout(150)
async def test_a_killed_session_service_loses_no_session(stack: LauncherStack) -> None:
    # Its first step ends well after the restart; the second comes after it.
    session = stack.create_session(waits_ms=(12_000, 10))
    await view(stack, session["id"])
    # Its browser is up and its task runs when the session service dies.
    running = wait_for_task(stack, session["id"], "RUNNING")
    started = [(s["index"], s["status"]) for s in running["steps"]]
    assert started in ([], [(1, "started")]), running["steps"]
    tree, sockets = kill_and_wait(stack, "session")
    assert_gone(tree, sockets)
    # Two reaper rounds: a session whose browser and slot are there stays live.
    await asyncio.sleep(7)
    after = stack.request("GET", f"/api/browser-session/{session['id']}")
    assert after["id"] == session["id"]
    assert after["state"] == "AI_CONTROL", (after, "".join(stack.lines[-15:]))
    assert after["createdAt"] == session["createdAt"]
    # The task went on in automation; the restarted service follows it again, and
    # every step event arrives once: none lost, none doubled.
    done = wait_for_task(stack, session["id"], "COMPLETED", timeout=30)
    assert done["version"] > running["version"]
    steps = [(s["index"], s["status"]) for s in done["steps"]]
    assert steps == [(1, "started"), (1, "succeeded"), (2, "started"), (2, "succeeded")]
    assert done["task"]["stepsCompleted"] == 2
    # Its viewer can connect again, and the person can still take over.
    await view(stack, session["id"])
    taken = stack.request(
        "PUT", f"/api/browser-session/{session['id']}/control", {"action": "take_control"}
    )
    assert taken["state"] == "USER_CONTROL"
    stack.request("DELETE", f"/api/browser-session/{session['id']}")
