"""End to end (real Xvnc, Chromium and the four services): a session whose agent
is done says so (FINISHED), stays for a person to take over, and gives its slot
back after BATON_FINISHED_IDLE_S; a session ended mid-task reports its task
cancelled (issue 14, part 3; README, "The control state machine")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import socketio
from playwright.async_api import expect

from services.display.settings import NumberRange
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.harness import bearer
from tests.edge.test_full_stack import ALICE, console_page, raw_viewer, stream_url

pytestmark = pytest.mark.asyncio(loop_scope="module")

# This module's own displays and VNC ports, apart from every other stack's.
DISPLAYS = NumberRange(2100, 2109)
VNC_PORTS = NumberRange(22100, 22109)
# Short, so the release is seen within a test; long enough to take control first.
FINISHED_IDLE_S = 5.0
FINISHED_IDLE_REASON = "finished and idle for 5 s"
# The agent asks for a person, then clicks Finish once control comes back.
WAITING_STEPS = [
    {"action": "request_user", "reason": "type the word"},
    {"action": "click", "selector": "#finish"},
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FullStack]:
    async with full_stack(
        tmp_path_factory.mktemp("finished"), DISPLAYS, VNC_PORTS, finished_idle_s=FINISHED_IDLE_S
    ) as running:
        yield running


def create_body(stack: FullStack, steps: list[dict[str, str]]) -> dict[str, Any]:
    return {"task": "fill in the form", "url": stack.site.form_url, "maxSteps": 5, "steps": steps}


async def waiting_session(stack: FullStack) -> dict[str, Any]:
    """A session whose agent waits for a person: its task is active."""
    session = await stack.request(
        "POST", "/api/browser-session", ALICE, create_body(stack, WAITING_STEPS)
    )
    return await stack.wait_for_session(
        ALICE, session["id"], lambda s: s["task"]["status"] == "WAITING_FOR_USER"
    )


async def control(stack: FullStack, session_id: str, action: str) -> dict[str, Any]:
    answer: dict[str, Any] = await stack.request(
        "PUT", f"/api/browser-session/{session_id}/control", ALICE, {"action": action}
    )
    return answer


async def test_a_finished_session_is_shown_taken_over_then_ended_and_its_slot_freed(
    stack: FullStack,
) -> None:
    stack.site.clear()
    session = await waiting_session(stack)
    session_id = session["id"]
    centre = (session["viewport"]["width"] // 2, session["viewport"]["height"] // 2)
    events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    watcher = socketio.AsyncClient(reconnection=False)
    for name in ("session:control_changed", "session:task_changed", "session:error"):
        watcher.on(name, lambda payload, name=name: events.put_nowait((name, payload)))
    await watcher.connect(stack.url, auth={"token": ALICE}, transports=["websocket"])
    try:
        assert (await watcher.call("session:watch", {"id": session_id}))["ok"] is True
        await control(stack, session_id, "take_control")
        await control(stack, session_id, "return_control")
        # The agent clicks Finish and its task completes: the event that says so
        # carries the session FINISHED, with nobody in control.
        while True:
            name, payload = await events.get()
            if payload["session"]["task"]["status"] == "COMPLETED":
                break
        assert name == "session:task_changed"
        assert (payload["session"]["state"], payload["session"]["controller"]) == ("FINISHED", None)
        assert stack.site.finished()
    finally:
        await watcher.disconnect()
    got = await stack.request("GET", f"/api/browser-session/{session_id}", ALICE)
    assert (got["state"], got["controller"], got["task"]["status"]) == (
        "FINISHED",
        None,
        "COMPLETED",
    )

    async with raw_viewer(await stream_url(stack, ALICE, session_id)) as alice:
        # Nobody controls a finished session: the owner's input is dropped too.
        await alice.click(*centre)
        await alice.type("no")
        await alice.sync()
        # A person may take it over, the usual way, and type into the page.
        taken = await control(stack, session_id, "take_control")
        assert (taken["state"], taken["controllerUserId"]) == ("USER_CONTROL", "alice")
        await alice.click(*centre)
        await alice.type("ok")
        await alice.sync()
        await stack.site.wait_until(lambda: len(stack.site.keys()) >= 2)
        assert stack.site.keys() == "ok"
        returned = await control(stack, session_id, "return_control")
        assert (returned["state"], returned["controller"]) == ("FINISHED", None)

    # Both slots taken (max_slots 2): one more create is refused for want of one.
    other = await waiting_session(stack)
    try:
        assert (await try_create(stack))[0] == 429
        # Left alone, the finished session ends with the documented reason...
        ended = await stack.wait_for_session(ALICE, session_id, lambda s: s["state"] == "ENDED")
        assert (ended["endedReason"], ended["task"]["status"]) == (
            FINISHED_IDLE_REASON,
            "COMPLETED",
        )
        # ...and its slot, released right after the end, serves another session.
        for _ in range(50):
            status, third = await try_create(stack)
            if status != 429:
                break
            await asyncio.sleep(0.1)
        assert status == 201, third
        await stack.request("DELETE", f"/api/browser-session/{third['id']}", ALICE)
    finally:
        await stack.request("DELETE", f"/api/browser-session/{other['id']}", ALICE)


async def try_create(stack: FullStack) -> tuple[int, dict[str, Any]]:
    async with stack.http.post(
        f"{stack.url}/api/browser-session", json=create_body(stack, []), headers=bearer(ALICE)
    ) as response:
        return response.status, await response.json()


async def test_a_session_deleted_mid_task_reports_its_task_cancelled(stack: FullStack) -> None:
    session = await waiting_session(stack)
    deleted = await stack.request("DELETE", f"/api/browser-session/{session['id']}", ALICE)
    assert (deleted["state"], deleted["task"]["status"]) == ("ENDED", "CANCELLED")
    got = await stack.request("GET", f"/api/browser-session/{session['id']}", ALICE)
    # The task's reason is the session's: who ended it.
    assert (got["task"]["status"], got["task"]["reason"]) == ("CANCELLED", "ended by alice")
    assert got["endedReason"] == "ended by alice"


async def test_the_console_shows_the_agent_finished_and_lets_a_person_take_over(
    stack: FullStack,
) -> None:
    page_errors: list[str] = []
    async with console_page(stack) as page:
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        await page.goto(f"{stack.url}/#token={ALICE}")
        await expect(page.locator("#socket-status")).to_have_text("live")
        await page.fill("#task-text", "press finish")
        await page.fill("#task-url", stack.site.form_url)
        await page.fill("#task-steps", json.dumps([{"action": "click", "selector": "#finish"}]))
        await page.click("#start-button")

        indicator = page.locator("#controller-indicator")
        await expect(indicator).to_have_text("Agent finished")
        await expect(page.locator("#session-state")).to_contain_text("FINISHED · task COMPLETED")
        await expect(page.locator("#user-request")).to_contain_text("The agent is done")
        for button in ("#pause-button", "#resume-button", "#return-button"):
            await expect(page.locator(button)).to_be_disabled()
        await expect(page.locator("#take-button")).to_be_enabled()

        await page.click("#take-button")
        await expect(indicator).to_have_text("You")
        await expect(page.locator("#view-mode")).to_have_text("interactive")
        await expect(page.locator("#pause-button")).to_be_disabled()
        await page.click("#return-button")
        await expect(indicator).to_have_text("Agent finished")
        await expect(page.locator("#view-mode")).to_have_text("view only")
        await expect(page.locator("#pause-button")).to_be_disabled()

        # Nobody takes it: it ends, and the page says why.
        await expect(indicator).to_have_text("Ended")
        await expect(page.locator("#session-state")).to_contain_text(FINISHED_IDLE_REASON)
        await expect(page.locator("#take-button")).to_be_disabled()
    assert page_errors == []
