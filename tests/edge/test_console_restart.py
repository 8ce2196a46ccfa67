"""After a restart of the session service (issue 14, part 2), in a real Chromium:
the console explains that the watched session is gone, rather than keep a dead
session on screen whose Take Control answers "not found"."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Page, expect

from baton.client.errors import ApiError
from services.display.settings import NumberRange
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.harness import user_token
from tests.edge.test_full_stack import console_page

pytestmark = pytest.mark.asyncio(loop_scope="module")

DISPLAYS = NumberRange(3100, 3103)
VNC_PORTS = NumberRange(23100, 23103)
ALICE = user_token("alice")
GONE = "The session you watched is gone"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FullStack]:
    async with full_stack(tmp_path_factory.mktemp("restart"), DISPLAYS, VNC_PORTS) as running:
        yield running


async def watch_a_working_agent(page: Page, stack: FullStack) -> str:
    """Start a task in the console; its session id once the live view shows it."""
    await page.goto(f"{stack.url}/#token={ALICE}")
    await expect(page.locator("#socket-status")).to_have_text("live")
    await page.fill("#task-text", "restart")
    await page.fill("#task-url", stack.site.form_url)
    await page.fill("#task-max-steps", "2")
    await page.fill("#task-steps", json.dumps([{"action": "wait", "ms": 60000}]))
    await page.click("#start-button")
    # Positive markers: the session is on screen, live, with the agent working.
    await expect(page.locator("#controller-indicator")).to_have_text("AI")
    await expect(page.locator("#view-status")).to_have_text("connected")
    # The console's toolbar is the only one: the element's own bar is hidden (`bare`).
    await expect(page.locator("#screen canvas")).to_be_visible()
    await expect(page.locator("#screen .bar")).to_be_hidden()
    return page.url.split("#session=", 1)[1]


async def sessions_once_reachable(stack: FullStack) -> dict[str, Any]:
    """Alice's sessions, once the edge reaches the restarted session service (its
    channel may be waiting out gRPC's reconnect backoff: 503 meanwhile)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            answer: dict[str, Any] = await stack.request("GET", "/api/browser-session", ALICE)
            return answer
        except ApiError as error:
            if error.status != 503 or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


async def expect_gone(page: Page) -> None:
    """The console says why, and shows no session (panel and view alike)."""
    await expect(page.locator("#error-text")).to_contain_text(GONE)
    await expect(page.locator("#error-text")).to_contain_text("Start a new task")
    await expect(page.locator("#controller-indicator")).to_have_text("no session")
    await expect(page.locator("#take-button")).to_be_disabled()
    await expect(page.locator("#view-status")).to_have_text("not connected")
    assert "#session=" not in page.url


async def test_after_the_stack_restarts_the_console_says_the_session_is_gone(
    stack: FullStack,
) -> None:
    """`make run` stopped and started again: the session service forgot every
    session and the console's connections come back to a new edge."""
    async with console_page(stack) as page:
        forgotten = await watch_a_working_agent(page, stack)

        async def while_down() -> None:
            await stack.restart_session()

        await stack.restart_edge(while_down)
        await expect(page.locator("#socket-status")).to_have_text("live", timeout=30_000)
        await expect_gone(page)
        # A link to it (or a reload of one) says the same.
        await page.evaluate("(id) => history.replaceState(null, '', `/#session=${id}`)", forgotten)
        await page.reload()
        await expect(page.locator("#identity")).to_have_text("signed in as alice")
        await expect_gone(page)
        # Signed in still: a new task starts on the restarted stack.
        await expect(page.locator("#identity")).to_have_text("signed in as alice")
        fresh = await watch_a_working_agent(page, stack)
        await expect(page.locator("#error-banner")).not_to_have_class("error-banner shown")
        # Its display slot for the next test (the forgotten session keeps the other).
        await stack.request("DELETE", f"/api/browser-session/{fresh}", ALICE)


async def test_take_control_on_a_session_a_restart_forgot_says_it_is_gone(
    stack: FullStack,
) -> None:
    """Only the session service restarted: the console's own connection stays up,
    and the person's next click finds the session gone (once "not found")."""
    async with console_page(stack) as page:
        session_id = await watch_a_working_agent(page, stack)
        await stack.restart_session()
        sessions = await sessions_once_reachable(stack)
        assert session_id not in [s["id"] for s in sessions["sessions"]]
        await expect(page.locator("#socket-status")).to_have_text("live")
        await page.click("#take-button")
        await expect_gone(page)
