"""BrowserSessions with an in-memory launcher: one task per session, pause rules, cleanup."""

from __future__ import annotations

import asyncio

import pytest

from baton.automation.v1 import automation_pb2 as pb
from services.automation.browser_sessions import BrowserSessions, PlannerChoice, TaskRequest
from services.automation.servicer import step_from_proto, task_request_from_proto
from services.automation.settings import AutomationSettings
from services.automation.steps import Click, RequestUser, StatusChanged, Step, TaskStatus
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from tests.automation.fake_browser import FakeLauncher
from tests.conftest import INTERNAL_TOKEN, eventually


def request(session_id: str = "s", *steps: Step, **fields: object) -> TaskRequest:
    values: dict[str, object] = {
        "session_id": session_id,
        "display": ":7",
        "width": 800,
        "height": 600,
        "task_text": "",
        "url": "http://site/",
        "max_steps": 5,
        "steps": list(steps),
    }
    values.update(fields)
    return TaskRequest(**values)  # type: ignore[arg-type]


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def sessions(launcher: FakeLauncher) -> BrowserSessions:
    return BrowserSessions(
        AutomationSettings(internal_token=INTERNAL_TOKEN, pause_grace_ms=50), launcher, None
    )


async def test_a_task_streams_to_its_end_and_keeps_the_browser(
    sessions: BrowserSessions, launcher: FakeLauncher
) -> None:
    events = [event async for _, event in sessions.start_task(request("s", Step(Click("#a"))))]
    assert isinstance(events[-1], StatusChanged)
    assert events[-1].status is TaskStatus.COMPLETED
    # A second task reuses the browser.
    [_ async for _ in sessions.start_task(request("s", Step(Click("#b"))))]
    assert len(launcher.launched) == 1
    assert launcher.launched[0].performed[-1] == Click("#b")
    await sessions.close_browser("s")
    assert launcher.launched[0].closed
    with pytest.raises(NotFound):
        await sessions.pause("s")


async def test_one_task_per_session(sessions: BrowserSessions) -> None:
    first = sessions.start_task(request("s", Step(RequestUser("wait"))))
    await anext(first)
    with pytest.raises(FailedPrecondition):
        await anext(sessions.start_task(request("s", Step(Click("#a")))))
    await first.aclose()
    await sessions.close_all()


async def test_closing_the_stream_cancels_the_task_after_the_grace_window(
    launcher: FakeLauncher,
) -> None:
    sessions = BrowserSessions(
        AutomationSettings(internal_token=INTERNAL_TOKEN, task_grace_s=0.2), launcher, None
    )
    stream = sessions.start_task(request("s", Step(RequestUser("wait"))))
    await anext(stream)
    await stream.aclose()
    # Within the window the task goes on: a follower can still attach.
    assert sessions._status(sessions._sessions["s"]) in (
        TaskStatus.RUNNING,
        TaskStatus.WAITING_FOR_USER,
    )
    await eventually(lambda: sessions._status(sessions._sessions["s"]) is TaskStatus.CANCELLED)
    assert not launcher.launched[0].closed
    # The end is in the log for a follower that comes late.
    events = [event async for _, event in sessions.attach_task("s", 0)]
    assert isinstance(events[-1], StatusChanged)
    assert events[-1].status is TaskStatus.CANCELLED
    assert "no session service followed the task for 0.2 s" in events[-1].reason
    await sessions.close_all()


async def test_a_grace_of_0_cancels_the_task_when_the_stream_closes(
    launcher: FakeLauncher,
) -> None:
    sessions = BrowserSessions(
        AutomationSettings(internal_token=INTERNAL_TOKEN, task_grace_s=0), launcher, None
    )
    stream = sessions.start_task(request("s", Step(RequestUser("wait"))))
    await anext(stream)
    await stream.aclose()
    assert await sessions.cancel("s") is TaskStatus.CANCELLED
    assert not launcher.launched[0].closed


async def test_attaching_reads_on_after_the_last_event_seen(
    sessions: BrowserSessions, launcher: FakeLauncher
) -> None:
    launcher.hold_actions = asyncio.Event()
    stream = sessions.start_task(request("s", Step(Click("#a")), Step(Click("#b"))))
    seen = [await anext(stream), await anext(stream)]
    await stream.aclose()
    assert [seq for seq, _ in seen] == [1, 2]
    # Another follower attaches after event 2 and reads on, live, to the end.
    attached = sessions.attach_task("s", 2)
    launcher.hold_actions.set()
    rest = [numbered async for numbered in attached]
    assert [seq for seq, _ in rest] == list(range(3, 3 + len(rest)))
    assert rest[-1][1] == StatusChanged(TaskStatus.COMPLETED, "all steps done", 3)
    assert launcher.launched[0].performed[-2:] == [Click("#a"), Click("#b")]
    # Following again from the start replays the whole task, nothing twice.
    replay = [seq async for seq, _ in sessions.attach_task("s", 0)]
    assert replay == list(range(1, 3 + len(rest)))
    await sessions.close_all()


async def test_attach_refuses_an_unknown_task_or_a_seq_beyond_its_events(
    sessions: BrowserSessions,
) -> None:
    with pytest.raises(NotFound):
        await anext(sessions.attach_task("nobody", 0))
    [_ async for _ in sessions.start_task(request("s"))]
    with pytest.raises(FailedPrecondition, match="cannot follow after 99"):
        await anext(sessions.attach_task("s", 99))
    await sessions.close_all()


async def test_act_is_refused_while_paused(sessions: BrowserSessions) -> None:
    [_ async for _ in sessions.start_task(request("s"))]
    event = await sessions.act("s", Step(Click("#a")))
    assert event.description == "click #a"
    status, aborted = await sessions.pause("s")
    assert (status, aborted) == (TaskStatus.COMPLETED, False)
    with pytest.raises(FailedPrecondition):
        await sessions.act("s", Step(Click("#a")))
    sessions.resume("s")
    await sessions.act("s", Step(Click("#a")))
    with pytest.raises(InvalidArgument):
        await sessions.act("s", Step(RequestUser("no")))


async def test_the_llm_planner_must_be_configured(sessions: BrowserSessions) -> None:
    with pytest.raises(FailedPrecondition, match="BATON_LLM_BASE_URL"):
        await anext(sessions.start_task(request("s", planner=PlannerChoice.LLM, task_text="x")))


async def test_a_new_display_gets_a_new_browser(
    sessions: BrowserSessions, launcher: FakeLauncher
) -> None:
    [_ async for _ in sessions.start_task(request("s"))]
    [_ async for _ in sessions.start_task(request("s", display=":8"))]
    assert [b.display for b in launcher.launched] == [":7", ":8"]
    assert launcher.launched[0].closed


async def test_a_browser_that_dies_between_tasks_is_cleaned_up(
    sessions: BrowserSessions, launcher: FakeLauncher
) -> None:
    [_ async for _ in sessions.start_task(request("s"))]
    launcher.launched[0].gone.set()
    await eventually(lambda: launcher.launched[0].closed)
    with pytest.raises(NotFound):
        await sessions.page_state("s", include_screenshot=False)


def test_proto_steps_are_checked() -> None:
    with pytest.raises(InvalidArgument):
        step_from_proto(pb.Step())
    with pytest.raises(InvalidArgument):
        step_from_proto(pb.Step(click=pb.ClickAction(selector="")))
    step = step_from_proto(pb.Step(click=pb.ClickAction(selector="#a"), timeout_ms=0))
    assert step == Step(Click("#a"))


def test_local_files_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        step_from_proto(pb.Step(goto=pb.GotoAction(url="file:///etc/shadow")))
    with pytest.raises(InvalidArgument):
        task_request_from_proto(pb.StartTaskRequest(session_id="s", url="file:///etc/shadow"))


def test_a_missing_viewport_defaults_to_the_display_size() -> None:
    converted = task_request_from_proto(pb.StartTaskRequest(session_id="s", display=":1"))
    assert (converted.width, converted.height) == (1280, 720)
    assert converted.planner is PlannerChoice.AUTO


async def test_a_pause_during_the_launch_holds_the_task(
    sessions: BrowserSessions, launcher: FakeLauncher
) -> None:
    launcher.hold = asyncio.Event()
    acted_while_paused: list[object] = []
    launcher.on_perform = lambda action: (
        acted_while_paused.append(action) if sessions._gates["s"].paused else None
    )
    stream = sessions.start_task(request("s", Step(Click("#a"))))
    first = asyncio.ensure_future(anext(stream))
    await eventually(lambda: "s" in sessions._gates)
    status, _ = await sessions.pause("s")
    assert status is TaskStatus.PENDING
    launcher.hold.set()
    assert (await first) == (1, StatusChanged(TaskStatus.RUNNING, "", 0))
    sessions.resume("s")
    events = [event async for _, event in stream]
    assert events[-1].status is TaskStatus.COMPLETED  # type: ignore[union-attr]
    assert launcher.launched[0].performed[-1] == Click("#a")
    assert acted_while_paused == []


async def test_closing_during_the_launch_closes_the_new_browser(
    sessions: BrowserSessions, launcher: FakeLauncher
) -> None:
    launcher.hold = asyncio.Event()
    stream = sessions.start_task(request("s", Step(Click("#a"))))
    first = asyncio.ensure_future(anext(stream))
    await eventually(lambda: "s" in sessions._gates)
    await sessions.close_browser("s")
    launcher.hold.set()
    with pytest.raises(FailedPrecondition, match="closed while starting"):
        await first
    assert launcher.launched[0].closed


async def test_the_first_action_after_a_resume_drains_the_persons_input(
    launcher: FakeLauncher,
) -> None:
    sessions = BrowserSessions(
        AutomationSettings(internal_token=INTERNAL_TOKEN, pause_grace_ms=50), launcher, None
    )
    [_ async for _ in sessions.start_task(request("s"))]
    browser = launcher.launched[0]
    await sessions.act("s", Step(Click("#a")))
    assert browser.drains == []
    await sessions.pause("s")
    sessions.resume("s")
    await sessions.act("s", Step(Click("#a")))
    await sessions.act("s", Step(Click("#a")))
    # Once, before the first action after the resume (goto + one click before it).
    assert browser.drains == [2]


async def test_input_drain_ms_0_turns_the_drain_off(launcher: FakeLauncher) -> None:
    sessions = BrowserSessions(
        AutomationSettings(internal_token=INTERNAL_TOKEN, input_drain_ms=0), launcher, None
    )
    [_ async for _ in sessions.start_task(request("s"))]
    await sessions.pause("s")
    sessions.resume("s")
    await sessions.act("s", Step(Click("#a")))
    assert launcher.launched[0].drains == []
