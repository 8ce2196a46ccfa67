"""The console's honest details (issue 14, part 2), in a real Chromium: extract
results are shown, a step a takeover cut short is "interrupted" (not a red failure),
step numbers of several digits fit, an error banner moves nothing under the cursor,
and ending a session asks first."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Dialog, Page, expect

from services.display.settings import NumberRange
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.harness import OPERATOR_TOKEN, user_token
from tests.edge.test_full_stack import console_page, end_confirmed, save_screenshot

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
    stack: FullStack, tmp_path: Path
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
        # The agent has opened the page (the screenshot shows it).
        await expect(page.locator("#step-list li").first).to_contain_text("succeeded")
        await page.locator("#take-button").scroll_into_view_if_needed()
        scrolled = await page.evaluate("() => window.scrollY")
        await page.click("#take-button")
        await expect(page.locator("#controller-indicator")).to_have_text("You")
        # Taking control focuses the live view without scrolling the page.
        assert await page.evaluate("() => window.scrollY") == scrolled
        await page.evaluate("() => window.scrollTo(0, 0)")
        await save_screenshot(page, tmp_path, "console-phone.png")
        sessions = await stack.request("GET", "/api/browser-session", ALICE)
        for session in sessions["sessions"]:
            if session["state"] not in ("ENDED", "FAILED"):
                await stack.request("DELETE", f"/api/browser-session/{session['id']}", ALICE)


async def test_at_1440x900_the_agent_asking_for_you_changes_the_tab_and_notifies(
    stack: FullStack, tmp_path: Path
) -> None:
    """The title and the favicon change, and the optional notification fires once,
    when the agent starts waiting for a person (notifications recorded in the page)."""
    async with console_page(stack) as page:
        await page.set_viewport_size({"width": 1440, "height": 900})
        await page.add_init_script(
            """window.__notes = [];
            window.Notification = class {
              static permission = "granted";
              static async requestPermission() { return "granted"; }
              constructor(title, options) { window.__notes.push([title, options.body]); }
            };"""
        )
        await page.goto(f"{stack.url}/#token={ALICE}")
        await expect(page.locator("#socket-status")).to_have_text("live")
        normal_icon = await page.locator("#favicon").get_attribute("href")
        await page.check("#notify-toggle")
        await start(page, stack, [{"action": "request_user", "reason": "sign in please"}])
        await expect(page).to_have_title("Your turn · Baton console")
        waiting_icon = await page.locator("#favicon").get_attribute("href")
        assert normal_icon and waiting_icon and waiting_icon != normal_icon
        assert "dd6b20" in waiting_icon
        notes = await page.evaluate("() => window.__notes")
        assert notes == [["Your turn · Baton", "sign in please"]]
        await expect(page.locator("#view-status")).to_have_text("connected")
        await save_screenshot(page, tmp_path, "console-desktop.png")
        await page.click("#take-button")
        await expect(page).to_have_title("Baton console")
        assert await page.locator("#favicon").get_attribute("href") == normal_icon
        await end_confirmed(page)


async def test_a_long_error_is_one_line_with_its_details_behind_a_toggle(
    stack: FullStack,
) -> None:
    async with console_page(stack) as page:
        await page.goto(f"{stack.url}/#token={ALICE}")
        await expect(page.locator("#socket-status")).to_have_text("live")
        await page.fill("#task-text", "long error")
        await page.fill("#task-url", stack.site.form_url)
        await page.fill("#task-steps", json.dumps([{"action": "x" * 400}]))
        await page.click("#start-button")
        headline = page.locator("#error-text")
        await expect(headline).to_contain_text("Start:")
        assert len(await headline.inner_text()) <= 160
        details = page.locator("#error-details")
        await expect(details).to_be_visible()
        await expect(page.locator("#error-details-text")).to_be_hidden()
        await details.locator("summary").click()
        await expect(page.locator("#error-details-text")).to_contain_text("x" * 400)


async def test_the_console_says_the_server_is_unreachable_and_recovers_by_itself(
    stack: FullStack,
) -> None:
    async with console_page(stack) as page:
        await start(page, stack, [{"action": "wait", "ms": 60000}])
        await expect(page.locator("#view-status")).to_have_text("connected")

        async def while_down() -> None:
            await expect(page.locator("#error-text")).to_have_text("Server unreachable, retrying…")

        await stack.restart_edge(while_down)
        # Back by itself: live updates, the live view, and no banner.
        await expect(page.locator("#socket-status")).to_have_text("live", timeout=30_000)
        await expect(page.locator("#error-banner")).not_to_have_class("error-banner shown")
        await expect(page.locator("#view-status")).to_have_text("connected", timeout=30_000)
        await expect(page.locator("#controller-indicator")).to_have_text("AI")
        await end_confirmed(page)


async def test_after_a_restart_with_a_new_token_the_console_says_why_you_are_signed_out(
    stack: FullStack,
) -> None:
    async with console_page(stack) as page:
        await page.goto(f"{stack.url}/#token={OPERATOR_TOKEN}")
        await expect(page.locator("#socket-status")).to_have_text("live")
        await stack.restart_edge(api_token="a-token-generated-by-the-next-start")
        try:
            await expect(page.locator("#error-text")).to_contain_text(
                "The server restarted and no longer accepts this token", timeout=30_000
            )
            await expect(page.locator("#identity")).to_have_text("signed out")
        finally:
            await stack.restart_edge()
