"""The session service's orchestration, over in-memory twins of the workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from baton.automation.v1 import automation_pb2
from services.runtime.errors import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from services.session.model import Action, Actor, ControlState, EventKind, Session, TaskStatus
from services.session.orchestrator import SessionOrchestrator, SessionSpec
from services.session.settings import SessionSettings
from services.session.store import SessionStore
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
    settings = SessionSettings(idle_timeout_s=60, max_lifetime_s=600)
    sessions = SessionOrchestrator(store, worker, settings, clock)
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


async def test_full_host_fails_the_session_with_the_reason(plane: Plane) -> None:
    plane.display.capacity = 0
    with pytest.raises(ResourceExhausted):
        await plane.sessions.create(ALICE, SPEC)
    [failed] = await plane.sessions.list_sessions(ALICE)
    assert failed.state is ControlState.FAILED
    assert "slots are in use" in failed.ended_reason


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
        async for change in plane.sessions.watch(ALICE, session.id):
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
    assert [s.status for s in final.steps] == [
        automation_pb2.STEP_STATUS_STARTED,
        automation_pb2.STEP_STATUS_SUCCEEDED,
    ]
    # A finished task leaves a live session the user can still take over.
    assert final.state is ControlState.AI_CONTROL
    taken = await plane.sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)
    assert taken.state is ControlState.USER_CONTROL


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


async def test_sessions_end_at_their_maximum_lifetime(plane: Plane) -> None:
    session = await plane.sessions.create(ALICE, SPEC)
    await plane.sessions.record_activity(session.id, viewers_delta=1, input_seen=True)
    plane.clock.advance(601)
    [ended] = await plane.sessions.reap()
    assert ended.id == session.id
    assert ended.ended_reason == "maximum lifetime of 600 s reached"


async def test_a_dead_slot_fails_its_session(plane: Plane) -> None:
    plane.sessions.start_background()
    session = await plane.sessions.create(ALICE, SPEC)
    assert session.placement is not None
    plane.display.fail(session.placement.slot_id, "Xvnc exited with status 1")
    failed = await eventually(plane, session.id, lambda s: s.state.terminal)
    assert failed.state is ControlState.FAILED
    assert failed.ended_reason == "display failed: Xvnc exited with status 1"


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
    assert failed.ended_reason == "automation failed: automation service unreachable"
    assert (await plane.sessions.get(ALICE, session.id)).state is ControlState.AI_CONTROL
