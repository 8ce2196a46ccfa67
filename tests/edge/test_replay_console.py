"""The replay's input counts and the console's replay and audit views (issue
15, parts 1 and 5), end to end: real Xvnc, ffmpeg, Chromium, every service.

A recorded session runs a step, its owner takes control and types through the
live stream, returns it, and ends the session; the timeline then counts the
keys per second without them, the console's replay view plays the video and
seeks to the handoff, and an operator's audit view names who took control.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import expect

from services.display.settings import NumberRange
from tests.conftest import require_binary
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.harness import OPERATOR_TOKEN, user_token
from tests.edge.recorded import end_recorded, read_timeline, start_recorded
from tests.edge.test_full_stack import console_page, raw_viewer, stream_url

pytestmark = pytest.mark.asyncio(loop_scope="module")

# This suite's displays and VNC ports (3200-3203 / 23200-23203).
DISPLAYS = NumberRange(3200, 3203)
VNC_PORTS = NumberRange(23200, 23203)
ALICE = user_token("alice")
# Typed during the takeover: the timeline counts it and never holds it.
MARKER = "zqxvjk"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FullStack]:
    require_binary("ffmpeg", "ffmpeg")
    async with full_stack(tmp_path_factory.mktemp("replay"), DISPLAYS, VNC_PORTS) as running:
        yield running


async def recorded_takeover(stack: FullStack) -> tuple[str, dict[str, Any], str]:
    """A recorded session with a step and a takeover typed in, ended: its id,
    timeline and the timeline's raw text."""
    session_id = await start_recorded(stack, ALICE, "replay me", steps=())
    base = f"/api/browser-session/{session_id}"
    async with raw_viewer(await stream_url(stack, ALICE, session_id)) as viewer:
        await stack.request("PUT", f"{base}/control", ALICE, {"action": "take_control"})
        await viewer.type(MARKER[:3])
        await viewer.sync()
        # Past the edge's report interval: the rest rides a later report.
        await asyncio.sleep(1.2)
        await viewer.type(MARKER[3:])
        await viewer.click(10, 10)
        await viewer.sync()
        await asyncio.sleep(1.5)
        await stack.request("PUT", f"{base}/control", ALICE, {"action": "return_control"})
    await asyncio.sleep(1.0)
    await end_recorded(stack, ALICE, session_id, DISPLAYS)
    timeline, raw = await read_timeline(stack, ALICE, session_id)
    return session_id, timeline, raw


@pytest.mark.timeout(120)
async def test_the_replay_counts_input_and_the_console_replays_and_audits(
    stack: FullStack,
) -> None:
    session_id, timeline, raw = await recorded_takeover(stack)

    # Input counts per second during the takeover, never the keys.
    control = {e["action"]: e["offsetS"] for e in timeline["events"] if e["kind"] == "control"}
    taken, returned = control["take_control"], control["return_control"]
    inputs = timeline["inputs"]
    assert sum(b["keys"] for b in inputs) == len(MARKER), inputs
    assert sum(b["pointer"] for b in inputs) == 3, inputs
    assert len(inputs) >= 2, inputs
    assert all(taken - 1 <= b["offsetS"] <= returned for b in inputs), (inputs, control)
    assert MARKER not in raw and MARKER[:3] not in raw and MARKER[3:] not in raw

    async with console_page(stack) as page:
        # The owner's replay view: the video plays, the handoff is listed, and
        # clicking it seeks the video there.
        await page.goto(f"{stack.url}/#token={ALICE}")
        await expect(page.locator("#socket-status")).to_have_text("live")
        await page.click(f'#session-list li[data-session-id="{session_id}"] .replay-button')
        handoff = page.locator("#replay-timeline li.replay-control", has_text="take control")
        await expect(handoff).to_contain_text("by alice")
        await expect(page.locator("#replay-timeline li.replay-input").first).to_contain_text("keys")
        await page.wait_for_function(
            "document.getElementById('replay-video').readyState >= 2", timeout=30_000
        )
        await page.evaluate("document.getElementById('replay-video').muted = true")
        await page.evaluate("document.getElementById('replay-video').play()")
        await page.wait_for_function(
            "document.getElementById('replay-video').currentTime > 0.2", timeout=30_000
        )
        await page.evaluate("document.getElementById('replay-video').pause()")
        await handoff.locator("button").click()
        await page.wait_for_function(
            f"Math.abs(document.getElementById('replay-video').currentTime - {taken}) < 0.3"
            " && !document.getElementById('replay-video').seeking",
            timeout=10_000,
        )

        # The operator's audit view: the take_control, with who did it.
        await page.goto("about:blank")
        await page.goto(f"{stack.url}/#token={OPERATOR_TOKEN}")
        await expect(page.locator("#audit-panel")).to_be_visible()
        await page.fill("#audit-session", session_id)
        await page.click("#audit-refresh")
        taken_row = page.locator(
            "#audit-list li[data-kind=control_changed]", has_text="action=take_control"
        )
        await expect(taken_row).to_contain_text("alice")
        # Newest first: the session's end is listed above the takeover.
        kinds = await page.locator("#audit-list li").evaluate_all(
            "items => items.map(i => i.textContent)"
        )
        ended = next(i for i, text in enumerate(kinds) if "action=end" in text)
        took = next(i for i, text in enumerate(kinds) if "action=take_control" in text)
        assert ended < took, kinds
