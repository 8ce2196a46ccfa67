"""What a person typed during a takeover never reaches the agent's model, in a real
Chromium: once remembered, the value is gone from every observation (the ARIA
snapshot shows field values), replaced by a placeholder; values the agent fills
itself still show (services/automation/person_typed.py)."""

from __future__ import annotations

import pytest

from services.automation.chromium import PlaywrightDriver
from services.automation.handback import WatchNotes, build_report, person_urls
from services.automation.person_typed import PLACEHOLDER, url_values, worth_hiding
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


async def test_what_a_person_sent_in_a_url_is_hidden_from_the_report_and_after(
    driver: PlaywrightDriver, display: str, pages: PageServer
) -> None:
    """A GET form puts what was typed into the next page's URL and title, and its
    field is gone by the return: the URL's values are remembered instead."""
    browser = await driver.launch("person-typed-url", display, 800, 600)
    try:
        await browser.perform(Goto(f"{pages.base_url}/search"), 10_000)
        notes = WatchNotes()
        before = await browser.start_watch(notes)
        # As a person would: type and send the form.
        await browser.perform(Fill("#q", MARKER), 10_000)
        await browser.perform(Click("#go"), 10_000)
        after = await browser.snapshot()
        browser.stop_watch()
        # The positive marker: the URL and title carry it.
        assert MARKER in after.url and MARKER in after.title

        await browser.remember_typed(
            [f.selector for f in notes.fields], person_urls(before, after, notes)
        )
        report = build_report(before, after, notes, 1.0, browser.hide_typed)
        assert report.url_after == f"{pages.base_url}/results?q={PLACEHOLDER}"
        assert MARKER not in repr(report)
        assert MARKER not in browser.url
        assert await browser.perform(Extract("#results"), 10_000) == f"Results for {PLACEHOLDER}"
    finally:
        await browser.close()


async def test_a_urls_values_are_found_as_written_and_decoded() -> None:
    found = url_values("https://x.test/p?q=two+words&n=1&t=a%2Fb#frag=secret-ish")
    assert found == {"two+words", "two words", "a%2Fb", "a/b", "secret-ish"}
    assert url_values("https://x.test/plain") == set()
