"""The session service's orchestration, over in-memory twins of the workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pytest

from baton.automation.v1 import automation_pb2
from baton.display.v1 import display_pb2
from services.runtime.errors import (
    Conflict,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from services.session import state_machine
from services.session.model import Action, Actor, ControlState, EventKind, Session, TaskStatus
from services.session.orchestrator import SessionOrchestrator, SessionSpec
from services.session.settings import SessionSettings
from services.session.store import MemoryStore, SessionStore, Stored
from services.session.workers import StaticWorkerDirectory, WorkerHost
from tests.conftest import INTERNAL_TOKEN
from tests.session.factories import T0
from tests.session.stores import store
from tests.session.twins import AutomationTwin, DisplayTwin, twin_worker

__all__ = ["store"]

ALICE = Actor("alice")
BOB = Actor("bob")
OPERATOR = Actor("operator", operator=True)
SPEC = SessionSpec(
    task="fill the form", url="http://127.0.0.1:9/", max_steps=5, steps=(), viewport=None
)


@dataclass
class Clock:
    now: datetime = field(default=T0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Plane:
    sessions: SessionOrchestrator
    display: DisplayTwin
    automation: AutomationTwin
    clock: Clock


@pytest.fixture
async def plane(store: SessionStore) -> AsyncIterator[Plane]:
    worker, display, automation = twin_worker()
    clock = Clock()
    settings = SessionSettings(internal_token=INTERNAL_TOKEN, idle_timeout_s=60, max_lifetime_s=600)
    sessions = SessionOrchestrator(store, StaticWorkerDirectory(worker), settings, clock)
    yield Plane(sessions, display, automation, clock)
    await sessions.close()


def step_event(
    index: int, status: automation_pb2.StepStatus.ValueType
) -> automation_pb2.StartTaskResponse:
    return automation_pb2.StartTaskResponse(
        step=automation_pb2.StepEvent(index=index, action="click", status=status)
    )


async def eventually(plane: Plane, session_id: str, check: object) -> Session:
    for _ in range(200):
        session = await plane.sessions.get(OPERATOR, session_id)
        if callable(check) and check(session):
            return session
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition never held: {session}")


async def test_create_places_the_session_and_starts_the_task(plane: Plane) -> None:
    session = await plane.sessions.create(ALICE, SPEC)
    assert session.state is ControlState.AI_CONTROL
    assert session.placement is not None
    slot = plane.display.slots[session.placement.slot_id]
    assert (slot.viewport.width, slot.viewport.height) == (1280, 720)
    await eventually(plane, session.id, lambda s: session.id in plane.automation.started)
    request = plane.automation.started[session.id]
    assert (request.display, request.url, request.max_steps) == (slot.display, SPEC.url, 5)


async def test_bad_specs_are_refused_before_allocating(plane: Plane) -> None:
    from services.session.model import Viewport

    with pytest.raises(InvalidArgument, match="viewport"):
        await plane.sessions.create(ALICE, SessionSpec("t", "http://x/", 5, (), Viewport(100, 100)))
    with pytest.raises(InvalidArgument, match="url"):
        await plane.sessions.create(ALICE, SessionSpec("t", "", 5, (), None))
    assert plane.display.slots == {}


async def test_full_host_refuses_the_create_and_keeps_no_record(plane: Plane) -> None:
    plane.display.capacity = 0
    with pytest.raises(ResourceExhausted, match="slots are in use"):
        await plane.sessions.create(ALICE, SPEC)
    assert await plane.sessions.list_sessions(ALICE) == []


async def test_take_control_pauses_the_agent_first_and_return_resumes_it(plane: Plane) -> None:
    session = await plane.sessions.create(ALICE, SPEC)
    taken = await plane.sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)
    assert (taken.state, taken.controller_user_id) == (ControlState.USER_CONTROL, "alice")
    assert ("pause", session.id) in plane.automation.calls
    assert ("resume", session.id) not in plane.automation.calls
    returned = await plane.sessions.change_control(ALICE, session.id, Action.RETURN_CONTROL, None)
    assert returned.state is ControlState.AI_CONTROL
    assert plane.automation.calls[-1] == ("resume", session.id)


async def test_refused_actions_do_not_touch_the_agent(plane: Plane) -> None:
    session = await plane.sessions.create(ALICE, SPEC)
    calls = list(plane.automation.calls)
    with pytest.raises(FailedPrecondition, match="resume while the session is AI_CONTROL"):
        await plane.sessions.change_control(ALICE, session.id, Action.RESUME, None)
    with pytest.raises(Conflict):
        await plane.sessions.change_control(ALICE, session.id, Action.PAUSE, session.version - 1)
    assert plane.automation.calls == calls
    taken = await plane.sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)
    again = await plane.sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)
    assert again.version == taken.version


async def test_twenty_concurrent_take_controls_exactly_one_wins(
    plane: Plane, store: SessionStore
) -> None:
    session = await plane.sessions.create(OPERATOR, SPEC)
    users = [Actor(f"user{i}", operator=True) for i in range(20)]
    results = await asyncio.gather(
        *(plane.sessions.change_control(u, session.id, Action.TAKE_CONTROL, None) for u in users),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Session)]
    losers = [r for r in results if not isinstance(r, Session)]
    assert len(winners) == 1
    assert all(isinstance(r, FailedPrecondition) for r in losers), losers
    stored = await store.get(session.id)
    assert stored is not None
    assert stored.session.controller_user_id == winners[0].controller_user_id
    # One change of control: the version moved exactly once for it.
    assert stored.session.version == winners[0].version


async def test_users_see_only_their_own_sessions(plane: Plane) -> None:
    mine = await plane.sessions.create(ALICE, SPEC)
    await plane.sessions.create(BOB, SPEC)
    with pytest.raises(NotFound):
        await plane.sessions.get(BOB, mine.id)
    with pytest.raises(NotFound):
        await plane.sessions.change_control(BOB, mine.id, Action.TAKE_CONTROL, None)
    assert [s.owner_user_id for s in await plane.sessions.list_sessions(ALICE)] == ["alice"]
    assert len(await plane.sessions.list_sessions(OPERATOR)) == 2


async def test_task_events_update_the_session_and_reach_watchers(plane: Plane) -> None:
    session = await plane.sessions.create(ALICE, SPEC)
    seen: list[Session] = []

    async def watch() -> None:
        first, changes = await plane.sessions.watch(ALICE, session.id)
        seen.append(first.session)
        async for change in changes:
            seen.append(change)
            if change.task.status is TaskStatus.COMPLETED:
                return

    watcher = asyncio.create_task(watch())
    feed = plane.automation.feed(session.id)
    feed.put_nowait(
        automation_pb2.StartTaskResponse(
            status_changed=automation_pb2.TaskStatusChanged(
                status=automation_pb2.TASK_STATUS_RUNNING
            )
        )
    )
    feed.put_nowait(step_event(0, automation_pb2.STEP_STATUS_STARTED))
    feed.put_nowait(step_event(0, automation_pb2.STEP_STATUS_SUCCEEDED))
    feed.put_nowait(
        automation_pb2.StartTaskResponse(
            status_changed=automation_pb2.TaskStatusChanged(
                status=automation_pb2.TASK_STATUS_COMPLETED, steps_completed=1
            )
        )
    )
    await asyncio.wait_for(watcher, 5)
    kinds = [s.last_event.kind for s in seen[1:]]
    assert kinds == [EventKind.TASK_CHANGED, EventKind.STEP, EventKind.STEP, EventKind.TASK_CHANGED]
    final = seen[-1]
    assert final.task.steps_completed == 1
    # Each step event reached watchers as its own change, and the log has both.
    assert [s.last_event.step.status for s in seen[2:4] if s.last_event.step] == [
        automation_pb2.STEP_STATUS_STARTED,
        automation_pb2.STEP_STATUS_SUCCEEDED,
    ]
    full = await plane.sessions.get_full(ALICE, session.id)
    assert (full.session.step_count, [s.status for s in full.steps]) == (
        2,
        [automation_pb2.STEP_STATUS_STARTED, automation_pb2.STEP_STATUS_SUCCEEDED],
    )
    # A finished task leaves the session FINISHED (nobody in control, in the same
    # change watchers saw), live: the user can still take it over, and hands it
    # back to FINISHED (no agent to resume).
    assert (final.state, final.controller) == (ControlState.FINISHED, None)
    taken = await plane.sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)
    assert taken.state is ControlState.USER_CONTROL
    returned = await plane.sessions.change_control(
        ALICE, session.id, Action.RETURN_CONTROL, taken.version
    )
    assert returned.state is ControlState.FINISHED


async def test_the_agent_asking_for_a_person_is_visible(plane: Plane) -> None:
    session = await plane.sessions.create(ALICE, SPEC)
    plane.automation.feed(session.id).put_nowait(
        automation_pb2.StartTaskResponse(
            user_requested=automation_pb2.UserRequested(reason="log in, please")
        )
    )
    waiting = await eventually(plane, session.id, lambda s: s.user_request_reason != "")
    assert waiting.task.status is TaskStatus.WAITING_FOR_USER
    assert waiting.user_request_reason == "log in, please"


async def test_end_releases_browser_and_slot_once(plane: Plane) -> None:
    session = await plane.sessions.create(ALICE, SPEC)
    assert session.placement is not None
    ended = await plane.sessions.end(ALICE, session.id, "done")
    assert (ended.state, ended.ended_reason) == (ControlState.ENDED, "done")
    assert plane.display.released == [session.placement.slot_id]
    assert ("close", session.id) in plane.automation.calls
    again = await plane.sessions.end(ALICE, session.id, "twice")
    assert again.ended_reason == "done"
    assert plane.display.released == [session.placement.slot_id]
    with pytest.raises(FailedPrecondition):
        await plane.sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)


async def test_idle_sessions_end_unless_watched(plane: Plane) -> None:
    idle = await plane.sessions.create(ALICE, SPEC)
    watched = await plane.sessions.create(ALICE, SPEC)
    await plane.sessions.record_activity(watched.id, viewers_delta=1, input_seen=False)
    plane.clock.advance(61)
    ended = await plane.sessions.reap()
    assert [s.id for s in ended] == [idle.id]
    assert ended[0].ended_reason == "idle for 60 s"
    assert (await plane.sessions.get(ALICE, watched.id)).state is ControlState.AI_CONTROL


async def test_a_finished_session_nobody_takes_over_ends_after_finished_idle_s(
    store: SessionStore,
) -> None:
    """Its slot is kept for the person BATON_FINISHED_IDLE_S (watched or not),
    then given back; taking control and returning it starts the wait anew;
    working sessions keep the longer idle timeout."""
    worker, display, automation = twin_worker()
    clock = Clock()
    settings = SessionSettings(
        internal_token=INTERNAL_TOKEN, idle_timeout_s=600, finished_idle_s=30
    )
    sessions = SessionOrchestrator(store, StaticWorkerDirectory(worker), settings, clock)
    plane = Plane(sessions, display, automation, clock)
    try:
        finished = await sessions.create(ALICE, SPEC)
        working = await sessions.create(ALICE, SPEC)
        await finish_task(plane, finished.id)
        await eventually(plane, finished.id, lambda s: s.state is ControlState.FINISHED)
        await sessions.record_activity(finished.id, viewers_delta=1, input_seen=False)
        clock.advance(20)
        taken = await sessions.change_control(ALICE, finished.id, Action.TAKE_CONTROL, None)
        clock.advance(20)
        await sessions.change_control(ALICE, finished.id, Action.RETURN_CONTROL, taken.version)
        clock.advance(29)
        await sessions.record_activity(
            finished.id, viewers_delta=0, input_seen=False, viewer_seen=True
        )
        assert await sessions.reap() == []
        clock.advance(1)
        [ended] = await sessions.reap()
        assert (ended.id, ended.state, ended.ended_reason) == (
            finished.id,
            ControlState.ENDED,
            "finished and idle for 30 s",
        )
        assert ended.task.status is TaskStatus.COMPLETED
        assert finished.placement is not None
        assert display.released == [finished.placement.slot_id]
        assert (await sessions.get(ALICE, working.id)).state is ControlState.AI_CONTROL
    finally:
        await sessions.close()


async def test_a_session_ended_mid_task_reports_its_task_cancelled(plane: Plane) -> None:
    session = await plane.sessions.create(ALICE, SPEC)
    await plane.automation.feed(session.id).put(running_event())
    await eventually(plane, session.id, lambda s: s.task.status is TaskStatus.RUNNING)
    ended = await plane.sessions.change_control(ALICE, session.id, Action.END, None)
    assert (ended.state, ended.task.status, ended.task.reason) == (
        ControlState.ENDED,
        TaskStatus.CANCELLED,
        "ended by the user",
    )
    assert (await plane.sessions.get(ALICE, session.id)).task.status is TaskStatus.CANCELLED


async def test_sessions_end_at_their_maximum_lifetime(plane: Plane) -> None:
    session = await plane.sessions.create(ALICE, SPEC)
    await plane.sessions.record_activity(session.id, viewers_delta=1, input_seen=True)
    plane.clock.advance(601)
    [ended] = await plane.sessions.reap()
    assert ended.id == session.id
    assert ended.ended_reason == "maximum lifetime of 600 s reached"


async def test_a_dead_slot_fails_its_session_with_a_short_reason(
    plane: Plane, caplog: pytest.LogCaptureFixture
) -> None:
    plane.sessions.start_background()
    session = await plane.sessions.create(ALICE, SPEC)
    assert session.placement is not None
    plane.display.fail(session.placement.slot_id, "Xvnc exited with status 1: log tail ...")
    failed = await eventually(plane, session.id, lambda s: s.state.terminal)
    assert failed.state is ControlState.FAILED
    # The person reads a short reason; the details are in the service log.
    assert failed.ended_reason == "the display crashed"
    assert "Xvnc exited with status 1: log tail ..." in caplog.text


async def test_a_broken_task_stream_fails_the_session(plane: Plane) -> None:
    session = await plane.sessions.create(ALICE, SPEC)

    async def broken(
        request: automation_pb2.StartTaskRequest,
    ) -> AsyncIterator[automation_pb2.StartTaskResponse]:
        raise Unavailable("automation service unreachable")
        yield automation_pb2.StartTaskResponse()

    # The next session's task stream breaks at once.
    plane.automation.start_task = broken  # type: ignore[method-assign]
    other = await plane.sessions.create(ALICE, SPEC)
    failed = await eventually(plane, other.id, lambda s: s.state.terminal)
    # The automation service answers: its browser is what broke.
    assert failed.ended_reason == "the browser crashed"
    assert (await plane.sessions.get(ALICE, session.id)).state is ControlState.AI_CONTROL


def plane_with(store: SessionStore, display: DisplayTwin, automation: AutomationTwin) -> Plane:
    worker = WorkerHost("twin", "twin-display", "twin-automation", display, automation)
    clock = Clock()
    settings = SessionSettings(internal_token=INTERNAL_TOKEN, idle_timeout_s=60, max_lifetime_s=600)
    return Plane(
        SessionOrchestrator(store, StaticWorkerDirectory(worker), settings, clock),
        display,
        automation,
        clock,
    )


class SlowDisplay(DisplayTwin):
    """Allocation waits until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__()
        self.allocating = asyncio.Event()
        self.finish_allocation = asyncio.Event()

    async def allocate_slot(
        self, session_id: str, viewport: display_pb2.Viewport, record: bool = False
    ) -> display_pb2.Slot:
        self.allocating.set()
        await self.finish_allocation.wait()
        return await super().allocate_slot(session_id, viewport, record)


async def test_ending_a_starting_session_releases_the_slot_allocated_after(
    store: SessionStore,
) -> None:
    display = SlowDisplay()
    plane = plane_with(store, display, AutomationTwin())
    try:
        creating = asyncio.create_task(plane.sessions.create(ALICE, SPEC))
        await display.allocating.wait()
        [starting] = await plane.sessions.list_sessions(ALICE)
        assert starting.state is ControlState.STARTING
        ended = await plane.sessions.end(ALICE, starting.id, "changed my mind")
        assert ended.state is ControlState.ENDED
        display.finish_allocation.set()
        with pytest.raises(FailedPrecondition, match="ended while starting"):
            await creating
        # The slot that arrived after the end is given back, and no task started.
        assert display.slots == {}
        assert display.released == ["slot-1"]
        assert plane.automation.started == {}
        final = await plane.sessions.get(ALICE, starting.id)
        assert (final.state, final.ended_reason) == (ControlState.ENDED, "changed my mind")
    finally:
        await plane.sessions.close()


class FaithfulAutomation(AutomationTwin):
    """Pause state exists from StartTask's arrival on, as in automation: before
    that PauseTask is NOT_FOUND. StartTask arrives when the test lets it."""

    def __init__(self) -> None:
        super().__init__()
        self.deliver = asyncio.Event()
        self.refused_pause = asyncio.Event()
        self.paused: set[str] = set()
        self.known: set[str] = set()

    async def start_task(
        self, request: automation_pb2.StartTaskRequest
    ) -> AsyncIterator[automation_pb2.StartTaskResponse]:
        await self.deliver.wait()
        self.known.add(request.session_id)
        async for event in super().start_task(request):
            yield event

    async def pause_task(self, session_id: str) -> None:
        if session_id not in self.known:
            self.refused_pause.set()
            raise NotFound(f"no session {session_id!r} here: StartTask opens one")
        self.paused.add(session_id)
        await super().pause_task(session_id)


async def test_take_control_right_after_create_pauses_the_task_once_it_arrives(
    store: SessionStore,
) -> None:
    automation = FaithfulAutomation()
    plane = plane_with(store, DisplayTwin(), automation)
    try:
        session = await plane.sessions.create(ALICE, SPEC)
        taking = asyncio.create_task(
            plane.sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)
        )
        # The pause overtook StartTask on its way to automation.
        await automation.refused_pause.wait()
        automation.deliver.set()
        taken = await taking
        assert taken.state is ControlState.USER_CONTROL
        # The agent is held: it cannot act on the person's browser.
        assert session.id in automation.paused
        assert automation.calls == [("start", session.id), ("pause", session.id)]
    finally:
        await plane.sessions.close()


async def test_a_control_change_refused_after_the_pause_leaves_the_agent_running(
    plane: Plane,
) -> None:
    session = await plane.sessions.create(ALICE, SPEC)
    paused = await plane.sessions.change_control(ALICE, session.id, Action.PAUSE, None)
    record = plane.automation.pause_task

    async def pause_while_control_changes(session_id: str) -> None:
        await record(session_id)
        # Meanwhile control changes: another replica resumes the agent. (A step
        # event alone would not refuse the change: the tests below.)
        await plane.sessions._records.update(
            session_id, lambda s: state_machine.apply(s, Action.RESUME, OPERATOR, plane.clock())
        )

    plane.automation.pause_task = pause_while_control_changes  # type: ignore[method-assign]
    with pytest.raises(Conflict):
        await plane.sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, paused.version)
    current = await plane.sessions.get(ALICE, session.id)
    assert current.state is ControlState.AI_CONTROL
    # The agent has control, so it is not left paused.
    assert plane.automation.calls[-2:] == [("pause", session.id), ("resume", session.id)]


class FlakyStore(MemoryStore):
    """The first two listings fail the way a store out of reach can (task
    adoption at start takes one, the reaper the other)."""

    def __init__(self) -> None:
        super().__init__()
        self.listings = 0

    async def list_all(self) -> list[Stored]:
        self.listings += 1
        if self.listings <= 2:
            raise RuntimeError("connection reset")
        return await super().list_all()


async def test_the_reaper_outlives_a_failed_round() -> None:
    worker, display, automation = twin_worker()
    clock = Clock()
    # A tiny idle timeout: the reaper runs every 10 ms.
    # No session quota, so the create does not list: the reaper's first round does.
    settings = SessionSettings(
        internal_token=INTERNAL_TOKEN,
        idle_timeout_s=0.04,
        max_lifetime_s=600,
        max_sessions_per_user=0,
    )
    sessions = SessionOrchestrator(FlakyStore(), StaticWorkerDirectory(worker), settings, clock)
    plane = Plane(sessions, display, automation, clock)
    try:
        session = await sessions.create(ALICE, SPEC)
        clock.advance(1)
        sessions.start_background()
        ended = await eventually(plane, session.id, lambda s: s.state.terminal)
        assert ended.ended_reason == "idle for 0.04 s"
    finally:
        await sessions.close()


async def test_ended_sessions_are_removed_after_the_retention_period(
    store: SessionStore,
) -> None:
    worker, display, automation = twin_worker()
    clock = Clock()
    settings = SessionSettings(
        internal_token=INTERNAL_TOKEN, idle_timeout_s=60, max_lifetime_s=600, ended_retention_s=300
    )
    plane = Plane(
        SessionOrchestrator(store, StaticWorkerDirectory(worker), settings, clock),
        display,
        automation,
        clock,
    )
    try:
        ended = await plane.sessions.create(ALICE, SPEC)
        await plane.sessions.end(ALICE, ended.id, "done")
        clock.advance(299)
        live = await plane.sessions.create(ALICE, SPEC)
        await plane.sessions.reap()
        assert {s.id for s in await plane.sessions.list_sessions(ALICE)} == {ended.id, live.id}
        clock.advance(1)
        await plane.sessions.reap()
        # Gone from the store: memory does not grow with every session ever made.
        assert [s.id for s in await plane.sessions.list_sessions(ALICE)] == [live.id]
        assert await store.get(ended.id) is None
        with pytest.raises(NotFound):
            await plane.sessions.get(ALICE, ended.id)
    finally:
        await plane.sessions.close()


async def test_a_start_that_times_out_is_unavailable_not_internal(store: SessionStore) -> None:
    display = SlowDisplay()
    worker = WorkerHost("twin", "twin-display", "twin-automation", display, AutomationTwin())
    settings = SessionSettings(internal_token=INTERNAL_TOKEN, start_timeout_s=0.05)
    sessions = SessionOrchestrator(store, StaticWorkerDirectory(worker), settings, Clock())
    try:
        with pytest.raises(DeadlineExceeded):
            await sessions.create(ALICE, SPEC)
        # Its caller never got the id: nothing is kept, nothing stays allocated.
        assert await sessions.list_sessions(ALICE) == []
        assert display.slots == {}
    finally:
        await sessions.close()


class StreamClosingAutomation(AutomationTwin):
    """Records when a task stream is closed from the session side."""

    async def start_task(
        self, request: automation_pb2.StartTaskRequest
    ) -> AsyncIterator[automation_pb2.StartTaskResponse]:
        try:
            async for event in super().start_task(request):
                yield event
        finally:
            self.calls.append(("stream closed", request.session_id))


async def test_ending_closes_the_task_stream_before_the_browser(store: SessionStore) -> None:
    automation = StreamClosingAutomation()
    plane = plane_with(store, DisplayTwin(), automation)
    try:
        session = await plane.sessions.create(ALICE, SPEC)
        await eventually(plane, session.id, lambda s: session.id in automation.started)
        await plane.sessions.end(ALICE, session.id, "done")
        assert automation.calls == [
            ("start", session.id),
            ("stream closed", session.id),
            ("cancel", session.id),
            ("close", session.id),
        ]
    finally:
        await plane.sessions.close()


class UnreachableOnceDisplay(DisplayTwin):
    """The first release fails, as when the display service is restarting."""

    def __init__(self) -> None:
        super().__init__()
        self.refusals = 1

    async def release_slot(self, slot_id: str) -> None:
        if self.refusals:
            self.refusals -= 1
            raise Unavailable("display service unreachable")
        await super().release_slot(slot_id)


async def test_slots_held_for_no_live_session_are_given_back(store: SessionStore) -> None:
    display = UnreachableOnceDisplay()
    plane = plane_with(store, display, AutomationTwin())
    try:
        live = await plane.sessions.create(ALICE, SPEC)
        ended = await plane.sessions.create(ALICE, SPEC)
        assert live.placement is not None and ended.placement is not None
        # The end could not reach the display: its slot is still held.
        await plane.sessions.end(ALICE, ended.id, "done")
        # A slot for a session this store never heard of (lost with a restart).
        lost = await display.allocate_slot("lost-session", display_pb2.Viewport())
        assert set(display.slots) == {live.placement.slot_id, ended.placement.slot_id, lost.id}
        released = await plane.sessions.release_orphans()
        assert sorted(released) == sorted([ended.placement.slot_id, lost.id])
        assert set(display.slots) == {live.placement.slot_id}
        assert ("close", "lost-session") in plane.automation.calls
        assert await plane.sessions.release_orphans() == []
    finally:
        await plane.sessions.close()


async def test_a_resume_cut_short_by_the_end_does_not_rewrite_the_ended_session(
    plane: Plane,
) -> None:
    session = await plane.sessions.create(ALICE, SPEC)
    await plane.sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)
    ended: list[Session] = []

    async def ended_meanwhile(session_id: str) -> None:
        # The session ends (another tab, the reaper) while control comes back.
        ended.append(await plane.sessions.end(OPERATOR, session_id, "ended elsewhere"))
        raise NotFound(f"no session {session_id!r} here")

    plane.automation.resume_task = ended_meanwhile  # type: ignore[method-assign]
    await plane.sessions.change_control(ALICE, session.id, Action.RETURN_CONTROL, None)
    final = await plane.sessions.get(ALICE, session.id)
    assert final.last_event.kind is EventKind.ENDED
    assert (final.state, final.version) == (ControlState.ENDED, ended[0].version)


class HeldResumeAutomation(AutomationTwin):
    """ResumeTask stays in flight until the test lets it through."""

    def __init__(self) -> None:
        super().__init__()
        self.resuming = asyncio.Event()
        self.let_resume = asyncio.Event()

    async def resume_task(self, session_id: str) -> None:
        self.resuming.set()
        await self.let_resume.wait()
        await super().resume_task(session_id)


async def test_a_take_control_waits_for_the_previous_return_to_finish() -> None:
    # The memory store and the twins never suspend inside a control change
    # except where the test holds them, so the interleaving below is exact.
    automation = HeldResumeAutomation()
    plane = plane_with(MemoryStore(), DisplayTwin(), automation)
    try:
        session = await plane.sessions.create(ALICE, SPEC)
        await plane.sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)
        returning = asyncio.create_task(
            plane.sessions.change_control(ALICE, session.id, Action.RETURN_CONTROL, None)
        )
        await automation.resuming.wait()
        # Bob takes control while Alice's ResumeTask is still on its way.
        taking = asyncio.create_task(
            plane.sessions.change_control(OPERATOR, session.id, Action.TAKE_CONTROL, None)
        )
        for _ in range(5):
            await asyncio.sleep(0)
        automation.let_resume.set()
        await returning
        taken = await taking
        assert (taken.state, taken.controller_user_id) == (ControlState.USER_CONTROL, "operator")
        # The agent ends up paused under Bob: his pause came after Alice's resume.
        assert automation.calls[-2:] == [("resume", session.id), ("pause", session.id)]
    finally:
        await plane.sessions.close()


async def test_a_create_whose_caller_goes_away_fails_the_session(store: SessionStore) -> None:
    display = SlowDisplay()
    plane = plane_with(store, display, AutomationTwin())
    try:
        creating = asyncio.create_task(plane.sessions.create(ALICE, SPEC))
        await display.allocating.wait()
        creating.cancel()  # as gRPC does when the CreateSession call is cancelled
        with pytest.raises(asyncio.CancelledError):
            await creating
        assert await plane.sessions.list_sessions(ALICE) == []
        assert display.slots == {}
    finally:
        await plane.sessions.close()


async def test_viewers_count_only_while_reported_present(plane: Plane) -> None:
    session = await plane.sessions.create(ALICE, SPEC)
    await plane.sessions.record_activity(session.id, viewers_delta=1, input_seen=False)
    plane.clock.advance(61)  # past the idle timeout (60 s), within the lease (90 s)
    assert await plane.sessions.reap() == []
    await plane.sessions.record_activity(session.id, 0, False, viewer_seen=True)
    plane.clock.advance(80)
    assert await plane.sessions.reap() == []
    # No report for longer than the lease: the viewer count lapses, and the
    # session has been idle since the viewer was last seen.
    plane.clock.advance(71)
    [ended] = await plane.sessions.reap()
    assert (ended.id, ended.ended_reason) == (session.id, "idle for 60 s")


async def finish_task(plane: Plane, session_id: str) -> None:
    plane.automation.feed(session_id).put_nowait(
        automation_pb2.StartTaskResponse(
            status_changed=automation_pb2.TaskStatusChanged(
                status=automation_pb2.TASK_STATUS_COMPLETED
            )
        )
    )
    first, changes = await plane.sessions.watch(ALICE, session_id)
    if first.session.task.status is TaskStatus.COMPLETED:
        return
    async for change in changes:
        if change.task.status is TaskStatus.COMPLETED:
            return


async def test_take_control_closes_the_action_gate_even_when_the_task_has_finished(
    plane: Plane,
) -> None:
    # Issue 12, finding 7: Act still drives a finished task's browser, so the
    # person's control must close automation's gate whatever the task's status.
    # Returning control leads to FINISHED (the task is done) and reopens the gate.
    session = await plane.sessions.create(ALICE, SPEC)
    await finish_task(plane, session.id)
    await plane.sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)
    assert plane.automation.calls[-1] == ("pause", session.id)
    returned = await plane.sessions.change_control(ALICE, session.id, Action.RETURN_CONTROL, None)
    assert returned.state is ControlState.FINISHED
    assert plane.automation.calls[-1] == ("resume", session.id)


async def test_return_control_resumes_the_agent_only_after_every_edge_acknowledged(
    plane: Plane,
) -> None:
    session = await plane.sessions.create(ALICE, SPEC)
    await plane.sessions.record_activity(session.id, 1, False, True, edge_id="edge-1")
    await plane.sessions.stream_access(ALICE, session.id, edge_id="edge-2")
    taken = await plane.sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)
    returning = asyncio.create_task(
        plane.sessions.change_control(ALICE, session.id, Action.RETURN_CONTROL, None)
    )
    await asyncio.sleep(0.2)
    # Committed, but the agent waits for both edges' gates.
    assert (await plane.sessions.get(ALICE, session.id)).state is ControlState.AI_CONTROL
    assert ("resume", session.id) not in plane.automation.calls
    # An acknowledgement of the version before the change does not count.
    await plane.sessions.acknowledge_control(session.id, "edge-1", taken.version)
    await plane.sessions.acknowledge_control(session.id, "edge-2", taken.version + 1)
    await asyncio.sleep(0.1)
    assert not returning.done()
    await plane.sessions.acknowledge_control(session.id, "edge-1", taken.version + 1)
    returned = await asyncio.wait_for(returning, 1)
    assert returned.version == taken.version + 1
    assert plane.automation.calls[-1] == ("resume", session.id)


async def test_an_edge_that_never_acknowledges_delays_the_resume_a_bounded_time(
    store: SessionStore,
) -> None:
    worker, _, automation = twin_worker()
    settings = SessionSettings(internal_token=INTERNAL_TOKEN, control_fence_timeout_s=0.3)
    sessions = SessionOrchestrator(store, StaticWorkerDirectory(worker), settings, Clock())
    try:
        session = await sessions.create(ALICE, SPEC)
        await sessions.record_activity(session.id, 1, False, True, edge_id="dead-edge")
        await sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)
        began = asyncio.get_running_loop().time()
        await sessions.change_control(ALICE, session.id, Action.RETURN_CONTROL, None)
        waited = asyncio.get_running_loop().time() - began
        assert 0.3 <= waited < 2.0
        assert automation.calls[-1] == ("resume", session.id)
        # Its viewers are treated as gone: the next return does not wait for it.
        await sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)
        began = asyncio.get_running_loop().time()
        await sessions.change_control(ALICE, session.id, Action.RETURN_CONTROL, None)
        assert asyncio.get_running_loop().time() - began < 0.3
    finally:
        await sessions.close()


async def test_sessions_whose_slot_or_browser_is_gone_fail_on_the_second_look(
    plane: Plane,
) -> None:
    kept = await plane.sessions.create(ALICE, SPEC)
    no_browser = await plane.sessions.create(ALICE, SPEC)
    no_slot = await plane.sessions.create(ALICE, SPEC)
    assert no_slot.placement is not None
    # Automation has answered its StartTask (so no browser is being made), then
    # its Chromium died.
    await plane.automation.feed(no_browser.id).put(
        automation_pb2.StartTaskResponse(
            status_changed=automation_pb2.TaskStatusChanged(
                status=automation_pb2.TASK_STATUS_RUNNING
            )
        )
    )
    await eventually(plane, no_browser.id, lambda s: s.task.status is TaskStatus.RUNNING)
    plane.automation.closed.add(no_browser.id)
    plane.display.slots.pop(no_slot.placement.slot_id)  # the display restarted
    # Once could be a browser or slot being made by another writer: not yet.
    assert await plane.sessions.fail_stranded() == []
    assert sorted(await plane.sessions.fail_stranded()) == sorted([no_browser.id, no_slot.id])
    assert (await plane.sessions.get(ALICE, no_browser.id)).ended_reason == "the browser crashed"
    assert (await plane.sessions.get(ALICE, no_slot.id)).ended_reason == "the display crashed"
    assert (await plane.sessions.get(ALICE, kept.id)).state is ControlState.AI_CONTROL


def running_event() -> automation_pb2.StartTaskResponse:
    return automation_pb2.StartTaskResponse(
        status_changed=automation_pb2.TaskStatusChanged(status=automation_pb2.TASK_STATUS_RUNNING)
    )


async def test_after_a_restart_a_running_task_is_followed_again_without_loss_or_doubles(
    store: SessionStore,
) -> None:
    before = plane_with(store, DisplayTwin(), AutomationTwin())
    session = await before.sessions.create(ALICE, SPEC)
    feed = before.automation.feed(session.id)
    await feed.put(running_event())
    await feed.put(step_event(0, automation_pb2.STEP_STATUS_SUCCEEDED))
    await eventually(before, session.id, lambda s: s.task.steps_completed == 1)
    await before.sessions.close()
    # The task goes on in automation while nobody follows it (its grace window).
    await feed.put(step_event(1, automation_pb2.STEP_STATUS_SUCCEEDED))
    await feed.put(
        automation_pb2.StartTaskResponse(
            status_changed=automation_pb2.TaskStatusChanged(
                status=automation_pb2.TASK_STATUS_COMPLETED, steps_completed=2
            )
        )
    )
    after = plane_with(store, before.display, before.automation)
    assert await after.sessions.adopt_tasks() == [session.id]
    done = await eventually(after, session.id, lambda s: s.task.status is TaskStatus.COMPLETED)
    # Read on after event 2 (the last applied): each step once, none lost.
    assert after.automation.calls[-1] == ("attach", session.id)
    logged = (await after.sessions.get_full(ALICE, session.id)).steps
    assert (done.step_count, [e.index for e in logged]) == (2, [0, 1])
    assert (done.task.steps_completed, done.task.events_applied) == (2, 4)
    # A finished task needs nobody: nothing more to adopt.
    assert await after.sessions.adopt_tasks() == []
    await after.sessions.close()


async def test_after_a_restart_a_task_automation_lost_is_reported_interrupted(
    store: SessionStore,
) -> None:
    before = plane_with(store, DisplayTwin(), AutomationTwin())
    session = await before.sessions.create(ALICE, SPEC)
    await before.automation.feed(session.id).put(running_event())
    await eventually(before, session.id, lambda s: s.task.status is TaskStatus.RUNNING)
    await before.sessions.close()
    # Automation restarted too: it knows no task of the session.
    before.automation.started.clear()
    after = plane_with(store, before.display, before.automation)
    assert await after.sessions.adopt_tasks() == [session.id]
    recovered = await eventually(after, session.id, lambda s: s.task.status is TaskStatus.CANCELLED)
    # No agent left: the session is FINISHED, its browser kept for the person.
    assert recovered.state is ControlState.FINISHED
    assert recovered.task.reason == "the task was interrupted and could not be followed again"
    # The person's control still closes the action gate, and returning reopens
    # it (issue 12, finding 7): the browser is still there. Back to FINISHED.
    await after.sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)
    assert after.automation.calls[-1] == ("pause", session.id)
    returned = await after.sessions.change_control(ALICE, session.id, Action.RETURN_CONTROL, None)
    assert returned.state is ControlState.FINISHED
    assert after.automation.calls[-1] == ("resume", session.id)
    await after.sessions.close()


class PauseReportsAStep(AutomationTwin):
    """The pause interrupts a running step, which reports while the pause is under
    way (as automation's does); `meanwhile` may change the session as well."""

    def __init__(self) -> None:
        super().__init__()
        self.plane: Plane | None = None
        self.meanwhile: Callable[[str], Awaitable[None]] | None = None

    async def pause_task(self, session_id: str) -> None:
        await super().pause_task(session_id)
        assert self.plane is not None
        before = (await self.plane.sessions.get(OPERATOR, session_id)).version
        await self.feed(session_id).put(step_event(1, automation_pb2.STEP_STATUS_FAILED))
        await eventually(self.plane, session_id, lambda s: s.version > before)
        if self.meanwhile is not None:
            await self.meanwhile(session_id)


async def running_task(store: SessionStore) -> tuple[Plane, PauseReportsAStep, Session]:
    """A plane whose pauses interrupt a step, and alice's session with its task running."""
    automation = PauseReportsAStep()
    plane = plane_with(store, DisplayTwin(), automation)
    automation.plane = plane
    session = await plane.sessions.create(ALICE, SPEC)
    await automation.feed(session.id).put(running_event())
    seen = await eventually(plane, session.id, lambda s: s.task.status is TaskStatus.RUNNING)
    return plane, automation, seen


async def test_take_control_at_the_version_seen_succeeds_though_the_interrupted_step_reports(
    store: SessionStore,
) -> None:
    plane, _, seen = await running_task(store)
    try:
        taken = await plane.sessions.change_control(
            ALICE, seen.id, Action.TAKE_CONTROL, seen.version
        )
        assert (taken.state, taken.controller_user_id) == (ControlState.USER_CONTROL, "alice")
        # The positive marker: the step did report in between.
        assert taken.version > seen.version + 1
        full = await plane.sessions.get_full(ALICE, seen.id)
        assert [s.index for s in full.steps] == [1]
    finally:
        await plane.sessions.close()


async def test_a_control_change_during_the_pause_still_makes_the_version_stale(
    store: SessionStore,
) -> None:
    plane, automation, seen = await running_task(store)

    async def operator_pauses(session_id: str) -> None:
        # Another replica's change: straight through the store.
        await plane.sessions._records.update(
            session_id,
            lambda s: state_machine.apply(s, Action.PAUSE, OPERATOR, plane.clock()),
        )

    automation.meanwhile = operator_pauses
    try:
        with pytest.raises(Conflict, match="control changed at version"):
            await plane.sessions.change_control(ALICE, seen.id, Action.TAKE_CONTROL, seen.version)
        stored = await plane.sessions.get(ALICE, seen.id)
        assert stored.state is ControlState.PAUSED
    finally:
        await plane.sessions.close()


async def test_a_takeover_holds_the_recording_when_asked_and_refuses_if_it_cannot(
    plane: Plane,
) -> None:
    spec = replace(SPEC, record=True, pause_recording_during_takeover=True)
    session = await plane.sessions.create(ALICE, spec)
    assert session.placement is not None and session.recording is not None
    slot = session.placement.slot_id
    await plane.sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)
    assert plane.display.recording_paused == {slot: True}
    await plane.sessions.change_control(ALICE, session.id, Action.RETURN_CONTROL, None)
    assert plane.display.recording_paused == {slot: False}

    # A recording that cannot be held refuses the takeover: the agent goes on.
    async def broken(slot_id: str, paused: bool) -> None:
        raise Unavailable("the display service is gone")

    plane.display.pause_recording = broken  # type: ignore[method-assign]
    with pytest.raises(FailedPrecondition, match="could not be paused"):
        await plane.sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)
    after = await plane.sessions.get(ALICE, session.id)
    assert after.state is ControlState.AI_CONTROL
    assert plane.automation.calls[-1] == ("resume", session.id)


async def test_without_the_flag_a_takeover_leaves_the_recording_alone(plane: Plane) -> None:
    session = await plane.sessions.create(ALICE, replace(SPEC, record=True))
    await plane.sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)
    assert plane.display.recording_paused == {}
