"""Auto-return end to end (issue 15, part 3): real Xvnc, Chromium, every service.
A person takes control with conditions, acts through the live view, and control
comes back to the agent by itself, exactly as their Return Control would: the
hand-back report says auto_return and which condition held."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import expect

from services.display.settings import NumberRange
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.harness import bearer, user_token
from tests.edge.test_full_stack import console_page, raw_viewer, stream_url

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALICE = user_token("alice")
# This file's own displays and VNC ports.
DISPLAYS = NumberRange(2920, 2924)
VNC_PORTS = NumberRange(22920, 22924)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FullStack]:
    async with full_stack(tmp_path_factory.mktemp("auto-return"), DISPLAYS, VNC_PORTS) as running:
        yield running


async def waiting(stack: FullStack, url: str) -> dict[str, Any]:
    created = await stack.request(
        "POST",
        "/api/browser-session",
        ALICE,
        {"task": "auto-return", "url": url, "steps": [{"action": "request_user"}]},
    )
    return await stack.wait_for_session(
        ALICE, created["id"], lambda s: s["task"]["status"] == "WAITING_FOR_USER"
    )


async def take(stack: FullStack, session_id: str, conditions: dict[str, Any]) -> tuple[int, Any]:
    async with stack.http.put(
        f"{stack.url}/api/browser-session/{session_id}/control",
        json={"action": "take_control", "autoReturn": conditions},
        headers=bearer(ALICE),
    ) as response:
        return response.status, await response.json()


async def back_by_itself(stack: FullStack, session_id: str) -> dict[str, Any]:
    session = await stack.wait_for_session(
        ALICE, session_id, lambda s: s["state"] in ("AI_CONTROL", "FINISHED")
    )
    assert session["handback"]["reason"] == "auto_return"
    return session


@pytest.mark.parametrize(
    ("hash_", "conditions", "fired"),
    [
        ("", {"selectorAppears": "#dashboard"}, "selectorAppears"),
        ("#go", {"urlMatches": r"/colour$"}, "urlMatches"),
    ],
)
async def test_what_the_person_does_in_the_page_returns_control(
    stack: FullStack, hash_: str, conditions: dict[str, Any], fired: str
) -> None:
    session = await waiting(stack, stack.site.click_url + hash_)
    status, taken = await take(stack, session["id"], conditions)
    assert status == 200 and taken["state"] == "USER_CONTROL", taken
    # Not before the person acts (the positive marker: it is still theirs).
    await asyncio.sleep(1.2)
    current = await stack.request("GET", f"/api/browser-session/{session['id']}", ALICE)
    assert current["state"] == "USER_CONTROL"
    async with raw_viewer(await stream_url(stack, ALICE, session["id"])) as viewer:
        width, height = session["viewport"]["width"], session["viewport"]["height"]
        await viewer.click(width // 2, height // 2)
        await viewer.sync()
        back = await back_by_itself(stack, session["id"])
    assert back["handback"]["condition"] == fired
    assert back["handback"]["returnedBy"] == "alice"
    await stack.request("DELETE", f"/api/browser-session/{session['id']}", ALICE)


async def test_an_idle_person_gets_control_taken_back(stack: FullStack) -> None:
    session = await waiting(stack, stack.site.form_url)
    taken_at = time.monotonic()
    status, taken = await take(stack, session["id"], {"idleSeconds": 2})
    assert status == 200 and taken["autoReturn"]["idleSeconds"] == 2
    back = await back_by_itself(stack, session["id"])
    assert time.monotonic() - taken_at >= 2
    assert back["handback"]["condition"] == "idleSeconds"
    assert "autoReturn" not in back
    await stack.request("DELETE", f"/api/browser-session/{session['id']}", ALICE)


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        ({"urlMatches": "(unclosed"}, "not a pattern"),
        ({"selectorAppears": "###"}, "not a selector"),
        ({"idleSeconds": -1}, "idleSeconds"),
        ({}, "needs urlMatches"),
        ({"idle": 5}, "unknown field"),
    ],
)
async def test_bad_conditions_get_400_and_nothing_changes(
    stack: FullStack, conditions: dict[str, Any], message: str
) -> None:
    session = await waiting(stack, stack.site.form_url)
    status, answer = await take(stack, session["id"], conditions)
    assert status == 400 and message in answer["error"]["message"], answer
    current = await stack.request("GET", f"/api/browser-session/{session['id']}", ALICE)
    assert current["state"] == "AI_CONTROL"
    await stack.request("DELETE", f"/api/browser-session/{session['id']}", ALICE)


@pytest.mark.timeout(90)
async def test_the_console_counts_down_an_idle_return_and_keep_control_holds_it(
    stack: FullStack,
) -> None:
    session = await waiting(stack, stack.site.form_url)
    async with console_page(stack) as page:
        await page.goto(f"{stack.url}/#token={ALICE}&session={session['id']}")
        await expect(page.locator("#controller-indicator")).to_have_text("AI")
        taken_at = time.monotonic()
        status, _ = await take(stack, session["id"], {"idleSeconds": 12})
        assert status == 200
        await expect(page.locator("#controller-indicator")).to_have_text("You")
        countdown = page.locator("#auto-return")
        await expect(countdown).to_be_hidden()
        await expect(countdown).to_be_visible(timeout=10_000)
        await expect(page.locator("#auto-return-text")).to_contain_text("goes back to the agent")
        await page.click("#keep-control-button")
        await expect(countdown).to_be_hidden()
        # Past when it would have gone back without Keep control: still the person's.
        await asyncio.sleep(max(0.0, 13.5 - (time.monotonic() - taken_at)))
        current = await stack.request("GET", f"/api/browser-session/{session['id']}", ALICE)
        assert current["state"] == "USER_CONTROL"
        # Left idle again, it goes back, and the countdown goes with it.
        await expect(page.locator("#controller-indicator")).to_have_text(
            re.compile("^(AI|Agent finished)$"), timeout=20_000
        )
        await expect(countdown).to_be_hidden()
    back = await stack.request("GET", f"/api/browser-session/{session['id']}", ALICE)
    assert back["handback"]["condition"] == "idleSeconds"
    await stack.request("DELETE", f"/api/browser-session/{session['id']}", ALICE)
