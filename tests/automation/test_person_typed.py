"""What a person typed during a takeover never reaches the agent's model, in a real
Chromium: once remembered, the value is gone from every observation (the ARIA
snapshot shows field values), replaced by a placeholder; values the agent fills
itself still show (services/automation/person_typed.py)."""

from __future__ import annotations

import pytest

from services.automation.chromium import PlaywrightDriver
from services.automation.person_typed import PLACEHOLDER, worth_hiding
from services.automation.steps import Click, Extract, Fill, Goto
from tests.automation.support import PageServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

MARKER = "zebra-marker-4711"


async def test_a_value_a_person_typed_is_hidden_from_later_observations(
    driver: PlaywrightDriver, display: str, pages: PageServer
) -> None:
    browser = await driver.launch("person-typed", display, 800, 600)
    try:
        await browser.perform(Goto(f"{pages.base_url}/form"), 10_000)
        # As a person would leave it: the value in the field.
        await browser.perform(Fill("#name", MARKER), 10_000)
        seen = await browser.observe(with_aria=True)
        assert MARKER in seen.aria_snapshot  # the positive marker: values show

        await browser.remember_typed(["#name", "#no-such-field"])
        hidden = await browser.observe(with_aria=True)
        assert MARKER not in hidden.aria_snapshot + hidden.title + hidden.url
        assert PLACEHOLDER in hidden.aria_snapshot

        # What the agent fills itself afterwards still shows.
        await browser.perform(Fill("#email", "agent@example.org"), 10_000)
        after = await browser.observe(with_aria=True)
        assert "agent@example.org" in after.aria_snapshot
        assert MARKER not in after.aria_snapshot
    finally:
        await browser.close()


async def test_what_the_agent_reads_from_the_page_hides_it_too(
    driver: PlaywrightDriver, display: str, pages: PageServer
) -> None:
    """An `extract` result and a step's URL go to the model, the step stream, the
    timeline and webhooks: a page showing what the person typed does not bring it back."""
    browser = await driver.launch("person-typed-extract", display, 800, 600)
    try:
        await browser.perform(Goto(f"{pages.base_url}/form"), 10_000)
        await browser.perform(Fill("#name", MARKER), 10_000)
        await browser.remember_typed(["#name"])
        # The next page greets the name typed: "Thanks, <name>".
        await browser.perform(Click("#submit"), 10_000)
        read = await browser.perform(Extract("#thanks"), 10_000)
        assert read == f"Thanks, {PLACEHOLDER}"
        # The URL a step reports (its event, the timeline) too.
        await browser.perform(Goto(f"{pages.base_url}/form?name={MARKER}"), 10_000)
        assert browser.url == f"{pages.base_url}/form?name={PLACEHOLDER}"
    finally:
        await browser.close()


async def test_short_values_and_non_text_are_not_hidden() -> None:
    assert worth_hiding("  ab ") is None
    assert worth_hiding(None) is None
    assert worth_hiding(" abc ") == "abc"
