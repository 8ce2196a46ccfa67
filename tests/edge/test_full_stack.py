"""End to end: real Xvnc, websockify, Chromium, and all four services.

A raw RFB client goes through the edge's stream URL the way noVNC would; the
page it types into reports every key it receives.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Dialog, Page, async_playwright, expect
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from services.display.rfb_client import RfbClient, WebSocketChannel
from services.edge.rfb_filter import key_event, pointer_event
from tests.conftest import require_binary
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.harness import OPERATOR_TOKEN, user_token

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALICE = user_token("alice")
# The logger of the raw viewer's WebSocket (websockets logs each frame at DEBUG).
VIEWER_LOGGER = "tests.viewer"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FullStack]:
    async with full_stack(tmp_path_factory.mktemp("edge-e2e")) as running:
        yield running


class RawViewer:
    """A raw RFB client through the edge: handshake, then keys, clicks and a sync."""

    def __init__(self, channel: WebSocketChannel, client: RfbClient) -> None:
        self.channel = channel
        self.client = client

    async def type(self, text: str) -> None:
        for char in text:
            await self.channel.send(key_event(ord(char), True) + key_event(ord(char), False))

    async def click(self, x: int, y: int) -> None:
        await self.channel.send(
            pointer_event(x, y, 0) + pointer_event(x, y, 1) + pointer_event(x, y, 0)
        )

    async def sync(self) -> None:
        """A whole-screen update: the server has handled everything sent before."""
        await self.client.read_framebuffer()


@asynccontextmanager
async def raw_viewer(url: str) -> AsyncIterator[RawViewer]:
    async with connect(
        url,
        subprotocols=[Subprotocol("binary")],
        compression=None,
        max_size=None,
        proxy=None,
        # The test's own frames, apart from the services' (test_typed_text_not_logged.py).
        logger=logging.getLogger(VIEWER_LOGGER),
    ) as connection:
        channel = WebSocketChannel(connection)
        client = RfbClient(channel)
        await client.handshake(shared=True)
        yield RawViewer(channel, client)


async def start_form_task(stack: FullStack) -> dict[str, Any]:
    stack.site.clear()
    session: dict[str, Any] = await stack.request(
        "POST",
        "/api/browser-session",
        ALICE,
        {
            "task": "fill in the form",
            "url": stack.site.form_url,
            "maxSteps": 5,
            # The task opens its URL first, then runs these.
            "steps": [
                {"action": "request_user", "reason": "type the word"},
                {"action": "click", "selector": "#finish"},
            ],
        },
    )
    return await stack.wait_for_session(
        ALICE, session["id"], lambda s: s["task"]["status"] == "WAITING_FOR_USER"
    )


async def stream_url(stack: FullStack, token: str, session_id: str) -> str:
    answer = await stack.request("GET", f"/api/browser-session/{session_id}/stream", token)
    url: str = answer["url"]
    return url


async def test_input_reaches_the_page_only_from_the_controlling_user(stack: FullStack) -> None:
    session = await start_form_task(stack)
    session_id = session["id"]
    width, height = session["viewport"]["width"], session["viewport"]["height"]
    centre = (width // 2, height // 2)
    async with raw_viewer(await stream_url(stack, ALICE, session_id)) as alice:
        # The agent holds control: none of this reaches the display.
        await alice.click(*centre)
        await alice.type("ab")
        await alice.sync()

        await stack.request(
            "PUT", f"/api/browser-session/{session_id}/control", ALICE, {"action": "take_control"}
        )
        await alice.click(*centre)
        await alice.type("ok")
        await alice.sync()
        await stack.site.wait_until(lambda: len(stack.site.keys()) >= 2)
        assert stack.site.keys() == "ok"

        async with raw_viewer(await stream_url(stack, OPERATOR_TOKEN, session_id)) as other:
            await other.click(*centre)
            await other.type("no")
            await other.sync()
        await alice.type("z")
        await alice.sync()
        await stack.site.wait_until(lambda: len(stack.site.keys()) >= 3)
        assert stack.site.keys() == "okz"

        await stack.request(
            "PUT",
            f"/api/browser-session/{session_id}/control",
            ALICE,
            {"action": "return_control"},
        )
        # The agent carries on with its last step.
        await stack.site.wait_until(stack.site.finished)
        done = await stack.wait_for_session(
            ALICE, session_id, lambda s: s["task"]["status"] == "COMPLETED"
        )
        succeeded = [step["action"] for step in done["steps"] if step["status"] == "succeeded"]
        assert succeeded[0] == "goto"
        assert succeeded[-2:] == ["request_user", "click"]
    await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)


def processes_using_display(display: str) -> list[int]:
    """Pids whose command line names `display` or whose DISPLAY is it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if display.encode() in argv or b"DISPLAY=" + display.encode() in environ:
            found.append(int(entry.name))
    return found


def accepts_connections(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def leftovers(display: str, vnc_address: str, profile_root: Path) -> dict[str, bool]:
    """What of a session's display and browser exists on this host."""
    number = int(display.lstrip(":"))
    return {
        "processes": bool(processes_using_display(display)),
        "x socket": Path(f"/tmp/.X11-unix/X{number}").exists(),
        "x lock": Path(f"/tmp/.X{number}-lock").exists(),
        "vnc port": accepts_connections(vnc_address),
        "profiles": any(profile_root.iterdir()),
    }


async def test_delete_leaves_nothing_of_the_session_behind(stack: FullStack) -> None:
    session = await start_form_task(stack)
    placement = await stack.placement(session["id"])
    vnc_address = (await stack.slot(placement.slot_id)).vnc_address
    assert leftovers(placement.display, vnc_address, stack.profile_root) == {
        "processes": True,
        "x socket": True,
        "x lock": True,
        "vnc port": True,
        "profiles": True,
    }

    ended = await stack.request("DELETE", f"/api/browser-session/{session['id']}", ALICE)
    assert ended["state"] == "ENDED"
    assert leftovers(placement.display, vnc_address, stack.profile_root) == {
        "processes": False,
        "x socket": False,
        "x lock": False,
        "vnc port": False,
        "profiles": False,
    }
    # Its stream is gone too.
    status_url = f"{stack.url}/api/browser-session/{session['id']}/stream"
    async with stack.http.get(status_url, headers={"Authorization": f"Bearer {ALICE}"}) as answer:
        assert answer.status in (404, 409), await answer.text()


SCREENSHOT_NAME = "console-takeover.png"


@asynccontextmanager
async def console_page(stack: FullStack) -> AsyncIterator[Page]:
    """A page of a real Chromium, as a person would open the console in."""
    expect.set_options(timeout=30_000)
    stack.site.clear()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=require_binary("chromium", "chromium"),
            args=["--no-sandbox", "--disable-background-networking", "--no-first-run"],
        )
        try:
            yield await browser.new_page(viewport={"width": 1600, "height": 1000})
        finally:
            await browser.close()


async def end_confirmed(page: Page) -> None:
    """Click End and say yes when the console asks."""

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    page.once("dialog", accept)
    await page.click("#end-button")


async def test_console_takeover_in_a_real_browser(stack: FullStack, tmp_path: Path) -> None:
    """The product as a person uses it: start, watch, take over, type, hand back."""
    page_errors: list[str] = []
    async with console_page(stack) as page:
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        await page.goto(f"{stack.url}/#token={ALICE}")
        await expect(page.locator("#identity")).to_have_text("signed in as alice")
        await expect(page.locator("#socket-status")).to_have_text("live")

        await page.fill("#task-text", "fill in the form")
        await page.fill("#task-url", stack.site.form_url)
        await page.fill("#task-max-steps", "5")
        await page.fill(
            "#task-steps",
            json.dumps(
                [
                    {"action": "request_user", "reason": "type the word"},
                    {"action": "click", "selector": "#finish"},
                ]
            ),
        )
        await page.click("#start-button")
        # Steps appear live, then the agent asks for a person.
        await expect(page.locator("#step-list li").first).to_contain_text("succeeded")
        await expect(page.locator("#user-request")).to_contain_text("type the word")
        await expect(page.locator("#view-status")).to_have_text("connected")
        await expect(page.locator("#controller-indicator")).to_have_text("AI")
        await expect(page.locator("#view-mode")).to_have_text("view only")

        await page.click("#take-button")
        await expect(page.locator("#controller-indicator")).to_have_text("You")
        await expect(page.locator("#view-mode")).to_have_text("interactive")
        await page.locator("#screen canvas").click()
        await page.keyboard.type("baton")
        await stack.site.wait_until(lambda: len(stack.site.keys()) >= 5)
        assert stack.site.keys() == "baton"
        await save_screenshot(page, tmp_path)

        await page.click("#return-button")
        await stack.site.wait_until(stack.site.finished)
        # The agent finished its last step: the session is left to the person.
        await expect(page.locator("#controller-indicator")).to_have_text("Agent finished")
        await expect(page.locator("#session-state")).to_contain_text("COMPLETED")
        await expect(page.locator("#pause-button")).to_be_disabled()
        await expect(page.locator("#error-banner")).to_be_hidden()
        # The page appended each step from its session:step event (events carry
        # one step, not the list): it shows what GET's full view holds.
        listed = await stack.request("GET", "/api/browser-session", ALICE)
        (mine,) = [
            s
            for s in listed["sessions"]
            if s["task"]["text"] == "fill in the form" and s["state"] == "FINISHED"
        ]
        assert "steps" not in mine
        full = await stack.request("GET", f"/api/browser-session/{mine['id']}", ALICE)
        # The hand-back report is a row of its own beside the step it came during.
        latest = {
            (step["action"] == "handback", step["index"]): step["status"] for step in full["steps"]
        }
        assert len(latest) >= 4 and set(latest.values()) == {"succeeded"}
        await expect(page.locator("#step-list li")).to_have_count(len(latest))
        await expect(page.locator("#step-list li", has_text="handed it back")).to_have_count(1)
        for text in await page.locator("#step-list li").all_inner_texts():
            assert "succeeded" in text
        await end_confirmed(page)
        await expect(page.locator("#controller-indicator")).to_have_text("Ended")
    assert page_errors == []


async def save_screenshot(page: Page, tmp_path: Path, name: str = SCREENSHOT_NAME) -> None:
    """Into tmp_path; also into $BATON_SCREENSHOT_DIR (docs/) when set."""
    # Cosmetic only: give the typed word time to be drawn in the view.
    await page.wait_for_timeout(500)
    await page.screenshot(path=tmp_path / name)
    target = os.environ.get("BATON_SCREENSHOT_DIR")
    if target:
        publish_screenshot(tmp_path / name, Path(target))


def publish_screenshot(source: Path, target_dir: Path) -> None:
    target_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target_dir / source.name)


async def test_the_console_view_reconnects_after_its_edge_restarts_and_keeps_its_role(
    stack: FullStack,
) -> None:
    """An edge that goes away (here: restarted on its port, as a load balancer would
    send the console to another edge): the live view connects again with a new
    stream token, and the person who has control can type again."""
    async with console_page(stack) as page:
        await page.goto(f"{stack.url}/#token={ALICE}")
        await expect(page.locator("#socket-status")).to_have_text("live")
        await page.fill("#task-text", "wait for me")
        await page.fill("#task-url", stack.site.form_url)
        await page.fill("#task-steps", json.dumps([{"action": "request_user", "reason": "type"}]))
        await page.click("#start-button")
        # The page is open and the agent waits for the person.
        await expect(page.locator("#user-request")).to_contain_text("type")
        await expect(page.locator("#view-status")).to_have_text("connected")
        await page.click("#take-button")
        await expect(page.locator("#view-mode")).to_have_text("interactive")
        await page.locator("#screen canvas").click()
        await page.keyboard.type("ab")
        await stack.site.wait_until(lambda: stack.site.keys() == "ab")

        await stack.restart_edge()
        # The positive marker: the view noticed the edge was gone.
        await expect(page.locator("#view-status")).not_to_have_text("connected")
        await expect(page.locator("#view-status")).to_have_text("connected")
        await expect(page.locator("#view-mode")).to_have_text("interactive")
        await expect(page.locator("#error-banner")).to_be_hidden()
        await page.locator("#screen canvas").click()
        await page.keyboard.type("cd")
        await stack.site.wait_until(lambda: stack.site.keys() == "abcd")
        await end_confirmed(page)
        await expect(page.locator("#controller-indicator")).to_have_text("Ended")
