"""The console's honest details (issue 14, part 2), in a real Chromium: extract
results are shown, a step a takeover cut short is "interrupted" (not a red failure),
step numbers of several digits fit, an error banner moves nothing under the cursor,
and ending a session asks first."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Dialog, Page, expect

from services.display.settings import NumberRange
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.harness import OPERATOR_TOKEN, user_token
from tests.edge.test_full_stack import console_page

pytestmark = pytest.mark.asyncio(loop_scope="module")

DISPLAYS = NumberRange(2220, 2223)
VNC_PORTS = NumberRange(22220, 22223)
ALICE = user_token("alice")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FullStack]:
    async with full_stack(tmp_path_factory.mktemp("console"), DISPLAYS, VNC_PORTS) as running:
        yield running


async def start(page: Page, stack: FullStack, steps: list[dict[str, object]]) -> None:
    await page.goto(f"{stack.url}/#token={ALICE}")
    await expect(page.locator("#socket-status")).to_have_text("live")
    await page.fill("#task-text", "details")
    await page.fill("#task-url", stack.site.form_url)
    await page.fill("#task-max-steps", str(len(steps) + 1))
    await page.fill("#task-steps", json.dumps(steps))
    await page.click("#start-button")


async def test_results_numbers_and_an_interrupted_step(stack: FullStack) -> None:
    steps: list[dict[str, object]] = [{"action": "wait", "ms": 10}] * 11
    steps = [*steps, {"action": "extract", "selector": "h1"}, {"action": "wait", "ms": 8000}]
    async with console_page(stack) as page:
        await start(page, stack, steps)
        items = page.locator("#step-list li")
        # The extract step's text, as the page shows it.
        await expect(items.nth(12)).to_contain_text("succeeded")
        await expect(items.nth(12)).to_contain_text("→ Type a word")
        # "13." fits in the list's margin: room for four digits.
        room = await page.evaluate(
            """() => {
                const list = document.getElementById("step-list");
                const probe = document.createElement("span");
                probe.textContent = "1000. ";
                probe.style.font = getComputedStyle(list).font;
                document.body.append(probe);
                const needed = probe.getBoundingClientRect().width;
                probe.remove();
                return [parseFloat(getComputedStyle(list).paddingLeft), needed];
            }"""
        )
        assert room[0] >= room[1], room
        # A takeover during the long wait cuts it short (past the pause's grace).
        await expect(items.nth(13)).to_contain_text("started")
        await page.click("#take-button")
        await expect(page.locator("#controller-indicator")).to_have_text("You")
        await expect(items.nth(13)).to_contain_text("interrupted")
        await expect(items.nth(13)).to_contain_text("runs again when the agent resumes")
        assert await items.nth(13).get_attribute("class") == "step-interrupted"
        await page.click("#return-button")
        await expect(items.nth(13)).to_contain_text("started")


async def test_an_error_moves_nothing_and_ending_asks_first(stack: FullStack) -> None:
    async with console_page(stack) as page:
        await start(page, stack, [{"action": "wait", "ms": 60000}])
        await expect(page.locator("#controller-indicator")).to_have_text("AI")
        await expect(page.locator("#view-status")).to_have_text("connected")
        before = await page.locator("#screen").bounding_box()
        # A bad steps list: the error shows over the page.
        await page.fill("#task-steps", "[not json")
        await page.click("#start-button")
        await expect(page.locator("#error-banner")).to_be_visible()
        assert await page.locator("#screen").bounding_box() == before

        answers: list[str] = []

        async def answer(dialog: Dialog) -> None:
            answers.append(dialog.message)
            await (dialog.accept() if len(answers) > 1 else dialog.dismiss())

        page.on("dialog", answer)
        await page.click("#end-button")
        await expect(page.locator("#controller-indicator")).to_have_text("AI")
        assert len(answers) == 1 and "End this session?" in answers[0]
        await page.click("#end-button")
        await expect(page.locator("#controller-indicator")).to_have_text("Ended")
        assert len(answers) == 2


async def test_a_person_is_told_when_control_is_taken_back_and_operators_see_owners(
    stack: FullStack,
) -> None:
    async with console_page(stack) as page:
        await start(page, stack, [{"action": "wait", "ms": 60000}])
        await expect(page.locator("#controller-indicator")).to_have_text("AI")
        await page.click("#take-button")
        await expect(page.locator("#controller-indicator")).to_have_text("You")
        notice = page.locator("#control-notice")
        await expect(notice).to_be_hidden()
        sessions = await stack.request("GET", "/api/browser-session", ALICE)
        [mine] = [s for s in sessions["sessions"] if s["state"] == "USER_CONTROL"]
        # An operator returns control to the agent over her head.
        await stack.request(
            "PUT",
            f"/api/browser-session/{mine['id']}/control",
            OPERATOR_TOKEN,
            {"action": "return_control"},
        )
        await expect(page.locator("#controller-indicator")).to_have_text("AI")
        await expect(notice).to_have_text(
            "Control was taken from you: someone returned it to the agent."
        )
        # Taking it again clears the notice; her own return tells her nothing.
        await page.click("#take-button")
        await expect(notice).to_be_hidden()
        await page.click("#return-button")
        await expect(page.locator("#controller-indicator")).to_have_text("AI")
        await expect(notice).to_be_hidden()

        # The operator's list says whose each session is.
        await page.goto("about:blank")
        await page.goto(f"{stack.url}/#token={OPERATOR_TOKEN}")
        await expect(page.locator("#identity")).to_have_text("signed in as operator")
        listed = page.locator(f"#session-list li[data-session-id='{mine['id']}']")
        await expect(listed).to_contain_text("· alice")
        await stack.request("DELETE", f"/api/browser-session/{mine['id']}", ALICE)


async def test_a_wrong_token_signs_nobody_in(stack: FullStack) -> None:
    async with console_page(stack) as page:
        await page.goto(f"{stack.url}/#token=not-the-token")
        await expect(page.locator("#error-banner")).to_contain_text("That token is not valid")
        await expect(page.locator("#identity")).to_have_text("signed out")
        # Positive marker: the right one signs in on the same page.
        await page.fill("#token-input", ALICE)
        await page.click("#sign-in button")
        await expect(page.locator("#identity")).to_have_text("signed in as alice")
        await expect(page.locator("#error-banner")).to_be_hidden()


async def test_the_session_stays_in_the_address_and_the_title_calls_the_person(
    stack: FullStack,
) -> None:
    steps: list[dict[str, object]] = [{"action": "request_user", "reason": "sign in for me"}]
    async with console_page(stack) as page:
        await start(page, stack, steps)
        # The agent asks for the person: the tab's title says so.
        await expect(page.locator("#user-request")).to_contain_text("sign in for me")
        await expect(page).to_have_title("Your turn · Baton console")
        session_id = page.url.split("#session=", 1)[1]
        assert len(session_id) == 32, page.url
        assert ALICE not in page.url
        # A reload opens the same session again.
        await page.reload()
        await expect(page.locator("#identity")).to_have_text("signed in as alice")
        await expect(page.locator("#user-request")).to_contain_text("sign in for me")
        assert page.url.endswith(f"#session={session_id}")
        await page.click("#take-button")
        await expect(page.locator("#controller-indicator")).to_have_text("You")
        await expect(page).to_have_title("Baton console")
        await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)


async def test_a_phone_gets_the_live_view_across_its_width_and_the_controls_below(
    stack: FullStack,
) -> None:
    async with console_page(stack) as page:
        await page.set_viewport_size({"width": 390, "height": 844})
        await start(page, stack, [{"action": "wait", "ms": 60000}])
        await expect(page.locator("#view-status")).to_have_text("connected")
        canvas = page.locator("#screen canvas")
        await expect(canvas).to_be_visible()
        box = await canvas.bounding_box()
        assert box is not None and box["width"] >= 300 and box["height"] >= 150, box
        # Nothing wider than the screen: no sideways scrolling.
        width = await page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, width
        # The live view first, Take Control below it, both on the page.
        take = await page.locator("#take-button").bounding_box()
        assert take is not None and take["y"] > box["y"] + box["height"] - 1
        assert take["x"] >= 0 and take["x"] + take["width"] <= 390
        await page.click("#take-button")
        await expect(page.locator("#controller-indicator")).to_have_text("You")
        sessions = await stack.request("GET", "/api/browser-session", ALICE)
        for session in sessions["sessions"]:
            if session["state"] not in ("ENDED", "FAILED"):
                await stack.request("DELETE", f"/api/browser-session/{session['id']}", ALICE)
