"""Each session's browser is its own isolation unit (README.md, "Isolation"), end to
end: real Xvnc, Chromium and the four services.

Two users' sessions run side by side. Each Chromium runs as its display's own uid
with its sandbox on; from inside one browser's user, the other session's profile
cannot be read and its display cannot be connected to; the live view shows no
sandbox warning bar, against a Chromium started the old way (root, --no-sandbox)
whose bar pushes the same page down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from services.automation.browser_user import XAUTHORITY_NAME
from services.automation.chromium import WindowSize, chromium_args, profile_prefix
from services.automation.profile_reaper import TEMP_LINK
from services.automation.settings import AutomationSettings
from services.display.rfb_client import Framebuffer, RfbClient, TcpChannel
from services.display.settings import NumberRange
from tests.conftest import require_binary, stop_process
from tests.edge.full_stack import COLOUR_RGB, FullStack, full_stack
from tests.edge.harness import user_token
from tests.edge.test_full_stack import raw_viewer, stream_url

pytestmark = pytest.mark.asyncio(loop_scope="module")

DISPLAYS = NumberRange(1900, 1904)
VNC_PORTS = NumberRange(19900, 19904)
# The old way's Chromium, for the warning bar it shows.
BASELINE_DISPLAY = 1908
BASELINE_VNC_PORT = 19908
UID_BASE = AutomationSettings.browser_uid_base

ALICE = user_token("alice")
BOB = user_token("bob")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FullStack]:
    require_binary("xdpyinfo", "x11-utils")
    async with full_stack(tmp_path_factory.mktemp("isolation"), DISPLAYS, VNC_PORTS) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sessions(stack: FullStack) -> dict[str, dict[str, Any]]:
    """alice's and bob's sessions, each waiting for its person on the colour page."""
    found = {}
    for name, token in (("alice", ALICE), ("bob", BOB)):
        created = await stack.request(
            "POST",
            "/api/browser-session",
            token,
            {
                "task": "wait",
                "url": stack.site.colour_url,
                "steps": [{"action": "request_user", "reason": "wait"}],
            },
        )
        found[name] = await stack.wait_for_session(
            token, created["id"], lambda s: s["task"]["status"] == "WAITING_FOR_USER"
        )
    return found


def status_of(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def argv_of(pid: int) -> list[str]:
    # Chromium's children rewrite their command line as one space-separated string.
    return (
        Path(f"/proc/{pid}/cmdline")
        .read_bytes()
        .decode(errors="replace")
        .replace("\0", " ")
        .split()
    )


def chromium_processes() -> Iterator[tuple[int, list[str]]]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = argv_of(int(entry.name))
                if argv and argv[0].endswith("chromium"):
                    yield int(entry.name), argv


def browser_of(stack: FullStack, session_id: str) -> tuple[int, Path]:
    """The session's browser process (not a child) and its profile directory."""
    [profile] = stack.profile_root.glob(f"{profile_prefix(session_id)}*")
    for pid, argv in chromium_processes():
        if f"--user-data-dir={profile}" in argv and not any(a.startswith("--type=") for a in argv):
            return pid, profile
    raise AssertionError(f"no browser runs with the profile {profile}")


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parent = int(status_of(int(entry.name))["PPid"])
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


async def display_of(stack: FullStack, session: dict[str, Any]) -> str:
    return (await stack.placement(session["id"])).display


def first_file(profile: Path) -> Path:
    """A file Chromium wrote in the profile."""
    for root, _dirs, files in os.walk(profile / "Default"):
        for name in sorted(files):
            return Path(root) / name
    raise AssertionError(f"Chromium wrote nothing in {profile}")


def run_as(
    uid: int, argv: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`argv` as `uid`, with no groups and no capabilities: the browser's user."""
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", *argv],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=20,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


async def test_every_browser_runs_sandboxed_as_its_display_s_own_user(
    stack: FullStack, sessions: dict[str, dict[str, Any]]
) -> None:
    uids, namespaces = set(), set()
    for session in sessions.values():
        display = await display_of(stack, session)
        browser, _ = browser_of(stack, session["id"])
        uid = UID_BASE + int(display.lstrip(":"))
        assert status_of(browser)["Uid"].split() == [str(uid)] * 4
        assert status_of(browser)["CapEff"] == "0000000000000000"
        browser_ns = os.readlink(f"/proc/{browser}/ns/user")
        renderers = [pid for pid in descendants(browser) if "--type=renderer" in argv_of(pid)]
        assert renderers, "the session's page has a renderer"
        for renderer in renderers:
            status = status_of(renderer)
            assert status["Uid"].split() == [str(uid)] * 4
            assert status["Seccomp"] == "2", status
            assert status["NoNewPrivs"] == "1"
            assert os.readlink(f"/proc/{renderer}/ns/user") != browser_ns
        uids.add(uid)
        namespaces.add(browser_ns)
    assert len(uids) == 2
    # This stack's: a test's own viewer browser elsewhere on the machine may be root.
    ours = f"--user-data-dir={stack.profile_root}"
    every = [
        (pid, argv) for pid, argv in chromium_processes() if any(a.startswith(ours) for a in argv)
    ]
    assert len(every) > 4
    for pid, argv in every:
        assert "--no-sandbox" not in argv and "--test-type" not in argv, argv
        assert status_of(pid)["Uid"].split()[0] != "0", argv


async def test_one_session_s_browser_user_cannot_read_the_other_s_profile_or_use_its_display(
    stack: FullStack, sessions: dict[str, dict[str, Any]]
) -> None:
    require_binary("xdpyinfo", "x11-utils")
    alice_display = await display_of(stack, sessions["alice"])
    bob_display = await display_of(stack, sessions["bob"])
    alice_uid = UID_BASE + int(alice_display.lstrip(":"))
    _, alice_profile = browser_of(stack, sessions["alice"]["id"])
    _, bob_profile = browser_of(stack, sessions["bob"]["id"])
    alice_cookie = Path(os.readlink(alice_profile / TEMP_LINK)) / XAUTHORITY_NAME
    bob_cookie = Path(os.readlink(bob_profile / TEMP_LINK)) / XAUTHORITY_NAME
    # Her own profile, cookie and display: the paths work.
    for own_file in (alice_cookie, first_file(alice_profile)):
        read = run_as(alice_uid, ["cat", str(own_file)])
        assert read.returncode == 0, read
    assert run_as(alice_uid, ["ls", str(alice_profile)]).returncode == 0
    own = run_as(
        alice_uid, ["xdpyinfo", "-display", alice_display], {"XAUTHORITY": str(alice_cookie)}
    )
    assert own.returncode == 0, own.stderr
    # Bob's: refused.
    for path in (bob_cookie, first_file(bob_profile)):
        read = run_as(alice_uid, ["cat", str(path)])
        assert read.returncode != 0 and "Permission denied" in read.stderr, read
    listed = run_as(alice_uid, ["ls", str(bob_profile)])
    assert listed.returncode != 0 and "Permission denied" in listed.stderr
    for cookie in (alice_cookie, bob_cookie):
        other = run_as(
            alice_uid, ["xdpyinfo", "-display", bob_display], {"XAUTHORITY": str(cookie)}
        )
        assert other.returncode != 0 and "unable to open display" in other.stderr, other


def content_top(frame: Framebuffer) -> int | None:
    """The first row, down the middle, where the colour page shows."""
    x = frame.width // 2
    for y in range(frame.height):
        if all(abs(a - b) <= 8 for a, b in zip(frame.rgb(x, y), COLOUR_RGB, strict=True)):
            return y
    return None


async def top_of_page(client: RfbClient) -> int:
    for _ in range(100):
        top = content_top(await client.read_framebuffer())
        if top is not None:
            return top
        await asyncio.sleep(0.1)
    raise AssertionError("the colour page never showed")


def spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def connected(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    for _ in range(100):
        with contextlib.suppress(ConnectionRefusedError):
            return await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@contextlib.asynccontextmanager
async def old_way_browser(
    url: str, width: int, height: int, work: Path
) -> AsyncIterator[RfbClient]:
    """Chromium as root with --no-sandbox (as Baton ran it before) on an Xvnc of ours."""
    require_binary("Xvnc", "tigervnc-standalone-server")
    xvnc = spawn(
        ["Xvnc", f":{BASELINE_DISPLAY}", "-geometry", f"{width}x{height}", "-depth", "24",
         "-rfbport", str(BASELINE_VNC_PORT), "-localhost", "-SecurityTypes", "None",
         "-nolisten", "tcp"],
        dict(os.environ),
    )  # fmt: skip
    browser = None
    try:
        reader, writer = await connected(BASELINE_VNC_PORT)
        browser = spawn(
            ["chromium", "--no-sandbox", *chromium_args(WindowSize(width, height)),
             f"--user-data-dir={work}", url],
            {**os.environ, "DISPLAY": f":{BASELINE_DISPLAY}", "HOME": str(work)},
        )  # fmt: skip
        try:
            client = RfbClient(TcpChannel(reader, writer))
            await client.handshake(shared=True)
            yield client
        finally:
            writer.close()
    finally:
        # SIGTERM: Xvnc removes its lock file and socket.
        for process in (browser, xvnc):
            if process is not None:
                stop_process(process)


async def test_the_live_view_shows_no_sandbox_warning_bar(
    stack: FullStack, sessions: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    url = await stream_url(stack, ALICE, sessions["alice"]["id"])
    async with raw_viewer(url) as viewer:
        frame = await viewer.client.read_framebuffer()
        ours = await top_of_page(viewer.client)
    async with old_way_browser(stack.site.colour_url, frame.width, frame.height, tmp_path) as old:
        theirs = await top_of_page(old)
    # The old way's "unsupported command-line flag: --no-sandbox" bar sits between
    # the toolbar and the page, a few tens of pixels high; ours has none.
    assert theirs - ours >= 20, (ours, theirs)
