"""Take Control succeeds the first time whenever the state allows it (issue 14,
part 3): 100 take_controls through REST and 100 through the console, each with the
version the client had just seen, against an agent in the middle of its steps."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import expect

from services.display.settings import NumberRange
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.harness import user_token
from tests.edge.test_full_stack import console_page

pytestmark = pytest.mark.asyncio(loop_scope="module")

DISPLAYS = NumberRange(2210, 2213)
VNC_PORTS = NumberRange(22210, 22213)
ALICE = user_token("alice")
TAKES = 100
# Short steps, back to back: the agent is always in one, and each reports.
STEPS = [{"action": "wait", "ms": 40}] * 1000


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FullStack]:
    async with full_stack(tmp_path_factory.mktemp("takes"), DISPLAYS, VNC_PORTS) as running:
        yield running


async def busy_session(stack: FullStack) -> dict[str, Any]:
    body = {"task": "keep busy", "steps": STEPS, "maxSteps": len(STEPS)}
    created: dict[str, Any] = await stack.request("POST", "/api/browser-session", ALICE, body)
    return await stack.wait_for_session(
        ALICE, created["id"], lambda s: s["task"]["stepsCompleted"] >= 3
    )


@pytest.mark.timeout(180)
async def test_a_hundred_take_controls_over_rest_at_the_version_just_seen(
    stack: FullStack,
) -> None:
    session = await busy_session(stack)
    path = f"/api/browser-session/{session['id']}"
    rng = random.Random(14)
    steps_before = session["task"]["stepsCompleted"]
    for _ in range(TAKES):
        seen = await stack.request("GET", path, ALICE)
        # Meanwhile the agent's steps go on reporting (and bump the version).
        await asyncio.sleep(rng.uniform(0.02, 0.1))
        async with stack.http.put(
            f"{stack.url}{path}/control",
            json={"action": "take_control", "expectedVersion": seen["version"]},
            headers={"Authorization": f"Bearer {ALICE}"},
        ) as reply:
            taken = await reply.json()
            assert reply.status == 200, taken
        assert taken["state"] == "USER_CONTROL"
        returned = await stack.request(
            "PUT",
            f"{path}/control",
            ALICE,
            {"action": "return_control", "expectedVersion": taken["version"]},
        )
        assert returned["state"] == "AI_CONTROL"
        # Three requests an iteration, within the edge's 20 a second per user.
        await asyncio.sleep(0.12)
    after = await stack.request("GET", path, ALICE)
    # Positive marker: the agent was working all along.
    assert after["task"]["status"] == "RUNNING"
    assert after["task"]["stepsCompleted"] > steps_before + 10
    await stack.request("DELETE", path, ALICE)


@pytest.mark.timeout(240)
async def test_a_hundred_take_controls_from_the_console(stack: FullStack) -> None:
    async with console_page(stack) as page:
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(f"{stack.url}/#token={ALICE}")
        await expect(page.locator("#socket-status")).to_have_text("live")
        await page.fill("#task-text", "keep busy")
        await page.fill("#task-url", stack.site.form_url)
        await page.fill("#task-max-steps", str(len(STEPS)))
        await page.fill("#task-steps", json.dumps(STEPS))
        await page.click("#start-button")
        await expect(page.locator("#error-banner")).to_be_hidden()
        await expect(page.locator("#step-list li").nth(2)).to_contain_text("succeeded")
        indicator = page.locator("#controller-indicator")
        banner = page.locator("#error-banner")
        for _ in range(TAKES):
            await expect(indicator).to_have_text("AI")
            await page.click("#take-button")
            await expect(indicator).to_have_text("You")
            await expect(banner).to_be_hidden()
            await page.click("#return-button")
            await expect(banner).to_be_hidden()
        await expect(indicator).to_have_text("AI")
        assert errors == []
        sessions = await stack.request("GET", "/api/browser-session", ALICE)
        [busy] = [
            s
            for s in sessions["sessions"]
            if s["task"]["text"] == "keep busy" and s["state"] not in ("ENDED", "FAILED")
        ]
        # Positive marker: the agent kept working between the takeovers.
        assert busy["task"]["status"] == "RUNNING" and busy["task"]["stepsCompleted"] > 10
        await stack.request("DELETE", f"/api/browser-session/{busy['id']}", ALICE)
