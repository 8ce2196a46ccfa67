"""The hand-back report (handback.py) and how the agent hears it: its step
stream and its LLM planner's next prompt (BrowserSessions with a twin browser)."""

from __future__ import annotations

import asyncio

from services.automation.browser_sessions import BrowserSessions, PlannerChoice
from services.automation.handback import (
    MAX_ITEMS,
    NameChange,
    PageSnapshot,
    TypedField,
    WatchNotes,
    build_report,
    describe_handback,
    value_digest,
)
from services.automation.llm_planner import LlmPlanner
from services.automation.settings import AutomationSettings
from services.automation.steps import StatusChanged, StepEvent, TaskEvent, TaskStatus
from tests.automation.fake_browser import FakeLauncher
from tests.automation.scripted_llm import tool_call_answer
from tests.automation.test_browser_sessions import request
from tests.automation.test_llm_planner import ScriptedClient
from tests.conftest import INTERNAL_TOKEN, eventually


def test_cookies_are_compared_by_name_and_domain_never_shown() -> None:
    before = PageSnapshot(
        url="http://a/",
        cookies={("sid", "a", "/"): value_digest("old"), ("gone", "a", "/"): value_digest("x")},
    )
    after = PageSnapshot(
        url="http://a/next",
        cookies={("sid", "a", "/"): value_digest("new"), ("fresh", "b", "/"): value_digest("y")},
    )
    report = build_report(before, after, WatchNotes(), 2.5)
    assert report.cookies_changed == (
        NameChange("fresh", "b", "added"),
        NameChange("gone", "a", "removed"),
        NameChange("sid", "a", "changed"),
    )
    assert (report.url_before, report.url_after, report.held_seconds) == (
        "http://a/",
        "http://a/next",
        2.5,
    )
    assert "old" not in repr(report) and "new" not in repr(report)


def test_storage_is_compared_only_on_the_same_origin() -> None:
    items = {("localStorage", "draft"): value_digest("v")}
    same = build_report(
        PageSnapshot(origin="http://a"),
        PageSnapshot(origin="http://a", storage=items),
        WatchNotes(),
        0,
    )
    assert same.storage_changed == (NameChange("draft", "http://a", "added", "localStorage"),)
    elsewhere = build_report(
        PageSnapshot(origin="http://a"),
        PageSnapshot(origin="http://b", storage=items),
        WatchNotes(),
        0,
    )
    assert elsewhere.storage_changed == ()


def test_notes_keep_each_field_once_and_stay_bounded() -> None:
    notes = WatchNotes()
    for _ in range(3):
        notes.typed("  Email\n address ", "#email", "http://a/")
    for n in range(MAX_ITEMS + 10):
        notes.navigated(f"http://a/{n}")
    assert notes.fields == [TypedField("Email address", "#email", "http://a/")]
    assert len(notes.navigations) == MAX_ITEMS


async def test_the_agent_hears_the_report_in_its_step_stream_and_next_prompt() -> None:
    launcher = FakeLauncher()
    client = ScriptedClient(
        [
            tool_call_answer("c1", "request_user", {"reason": "sign in please"}),
            tool_call_answer("c2", "finish", {"success": True, "answer": "done"}),
        ]
    )
    sessions = BrowserSessions(
        AutomationSettings(internal_token=INTERNAL_TOKEN, pause_grace_ms=50),
        launcher,
        lambda text: LlmPlanner(client, "m", text),
    )
    events: list[TaskEvent] = []

    async def follow() -> None:
        task = request("s", planner=PlannerChoice.LLM, task_text="sign in")
        async for _, event in sessions.start_task(task):
            events.append(event)

    job = asyncio.ensure_future(follow())
    await eventually(
        lambda: any(
            isinstance(e, StatusChanged) and e.status is TaskStatus.WAITING_FOR_USER for e in events
        )
    )
    await sessions.pause("s")
    browser = launcher.launched[0]
    assert browser.notes is not None
    # What the person does, as the browser's listeners note it.
    browser.notes.typed("Email", "#email", browser.current_url)
    browser.cookies[("sid", "site", "/")] = value_digest("secret-session")
    report = await sessions.take_handback("s")
    assert report.fields_typed == (TypedField("Email", "#email", browser.current_url),)
    # What the person typed there is kept out of the model's next observations.
    assert browser.remembered == ["#email"]
    sessions.resume("s")
    assert browser.notes is None
    await asyncio.wait_for(job, 5)

    handbacks = [e for e in events if isinstance(e, StepEvent) and e.action == "handback"]
    assert [e.handback for e in handbacks] == [report]
    prompt = client.bodies[-1]["messages"][-1]["content"]
    assert describe_handback(report) in prompt
    assert "They typed into: Email." in prompt
    assert "sid (site, added)" in prompt
    assert "secret-session" not in prompt
