"""Task projection: each automation task event's effect on its session (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from baton.automation.v1 import automation_pb2
from services.runtime.limits import MAX_EVENT_TEXT_BYTES, MAX_STEP_EVENTS_KEPT
from services.session import codec
from services.session.model import ControlState, EventKind, TaskStatus
from services.session.records import new_step
from services.session.task_projection import DEFAULT_USER_REQUEST, project, task_lost
from tests.session.factories import T0, make_session

LATER = T0 + timedelta(seconds=3)


def step(
    index: int, status: automation_pb2.StepStatus.ValueType, error: str = ""
) -> automation_pb2.StartTaskResponse:
    return automation_pb2.StartTaskResponse(
        step=automation_pb2.StepEvent(index=index, action="click", status=status, error=error)
    )


def status(
    value: automation_pb2.TaskStatus.ValueType, reason: str = "", done: int = 0
) -> automation_pb2.StartTaskResponse:
    return automation_pb2.StartTaskResponse(
        status_changed=automation_pb2.TaskStatusChanged(
            status=value, reason=reason, steps_completed=done
        )
    )


def test_a_step_is_the_last_event_bounded_counted_and_done_when_it_succeeds() -> None:
    session = make_session()
    started = project(
        session, step(0, automation_pb2.STEP_STATUS_STARTED, error="x" * 10_000), LATER
    )
    assert started.last_event.kind is EventKind.STEP
    assert started.last_event.step is not None
    assert len(started.last_event.step.error.encode()) <= MAX_EVENT_TEXT_BYTES
    assert started.step_count == 1
    assert (started.task.steps_completed, started.version) == (0, session.version + 1)
    assert (started.updated_at, started.last_activity_at) == (LATER, LATER)
    done = project(started, step(0, automation_pb2.STEP_STATUS_SUCCEEDED), LATER)
    assert done.task.steps_completed == 1
    assert done.step_count == 2
    assert done.last_event.step is not None
    assert done.last_event.step.status == automation_pb2.STEP_STATUS_SUCCEEDED
    # The record appends the step (records.new_step); a change that is not a
    # step appends none.
    assert new_step(started, done) == done.last_event.step
    going_on = project(done, status(automation_pb2.TASK_STATUS_RUNNING), LATER)
    assert going_on.step_count == 2 and new_step(done, going_on) is None


def test_the_record_stays_small_however_many_steps() -> None:
    session = make_session()
    empty = len(codec.encode(session))
    for index in range(MAX_STEP_EVENTS_KEPT + 5):
        session = project(session, step(index, automation_pb2.STEP_STATUS_STARTED), LATER)
    assert session.step_count == MAX_STEP_EVENTS_KEPT + 5
    # The steps are in the log beside it (store.py), not in the record.
    assert len(codec.encode(session)) < empty + 1024


def test_the_agent_asking_for_a_person_and_the_task_going_on() -> None:
    asked = project(
        make_session(),
        automation_pb2.StartTaskResponse(user_requested=automation_pb2.UserRequested()),
        LATER,
    )
    assert (asked.task.status, asked.user_request_reason) == (
        TaskStatus.WAITING_FOR_USER,
        DEFAULT_USER_REQUEST,
    )
    going_on = project(asked, status(automation_pb2.TASK_STATUS_RUNNING), LATER)
    assert (going_on.task.status, going_on.user_request_reason) == (TaskStatus.RUNNING, "")
    assert going_on.last_event.kind is EventKind.TASK_CHANGED


def test_a_failed_task_is_an_error_event_and_the_count_never_goes_back() -> None:
    session = make_session()
    session = replace(session, task=replace(session.task, steps_completed=4))
    failed = project(session, status(automation_pb2.TASK_STATUS_FAILED, "page gone", 2), LATER)
    assert failed.task.status is TaskStatus.FAILED
    assert failed.task.steps_completed == 4
    assert failed.last_event.kind is EventKind.ERROR
    assert failed.last_event.message == "task failed: page gone"
    # The session itself goes on, FINISHED: a person may still take the browser over.
    assert (failed.state, failed.controller) == (ControlState.FINISHED, None)


def test_events_change_nothing_on_an_ended_session_or_when_unknown() -> None:
    ended = make_session(ControlState.ENDED)
    assert project(ended, step(0, automation_pb2.STEP_STATUS_STARTED), LATER) is ended
    live = make_session()
    assert project(live, automation_pb2.StartTaskResponse(), LATER) is live


def test_an_event_already_applied_changes_nothing() -> None:
    session = make_session()
    first = step(0, automation_pb2.STEP_STATUS_SUCCEEDED)
    first.seq = 1
    once = project(session, first, LATER)
    assert once.task.events_applied == 1
    assert once.task.steps_completed == 1
    # The same event again (a follower re-attaching from an older seq): no change.
    assert project(once, first, LATER) is once
    second = step(1, automation_pb2.STEP_STATUS_SUCCEEDED)
    second.seq = 2
    twice = project(once, second, LATER)
    assert (twice.task.events_applied, twice.task.steps_completed) == (2, 2)
    assert twice.step_count == 2


ENDING = [
    (automation_pb2.TASK_STATUS_COMPLETED, TaskStatus.COMPLETED),
    (automation_pb2.TASK_STATUS_FAILED, TaskStatus.FAILED),
    (automation_pb2.TASK_STATUS_CANCELLED, TaskStatus.CANCELLED),
]


@pytest.mark.parametrize("state", [ControlState.AI_CONTROL, ControlState.PAUSED])
@pytest.mark.parametrize(("event_status", "task_status"), ENDING)
def test_a_task_that_ends_leaves_the_session_finished(
    state: ControlState,
    event_status: automation_pb2.TaskStatus.ValueType,
    task_status: TaskStatus,
) -> None:
    """Not AI_CONTROL with a finished agent: FINISHED, nobody in control, in the
    one change (one version) that reports the task's end."""
    session = replace(make_session(state), user_request_reason="sign in")
    done = project(session, status(event_status, "no planner: left to the person"), LATER)
    assert (done.state, done.controller, done.controller_user_id) == (
        ControlState.FINISHED,
        None,
        "",
    )
    assert (done.task.status, done.task.reason) == (task_status, "no planner: left to the person")
    assert (done.version, done.updated_at, done.user_request_reason) == (
        session.version + 1,
        LATER,
        "",
    )


def test_a_person_in_control_keeps_it_when_the_task_ends() -> None:
    session = make_session(ControlState.USER_CONTROL)
    done = project(session, status(automation_pb2.TASK_STATUS_COMPLETED), LATER)
    assert (done.state, done.controller_user_id, done.task.status) == (
        ControlState.USER_CONTROL,
        "alice",
        TaskStatus.COMPLETED,
    )


def test_steps_and_requests_keep_the_agent_in_control() -> None:
    session = make_session(ControlState.AI_CONTROL)
    for event in (
        step(0, automation_pb2.STEP_STATUS_FAILED, "no such element"),
        status(automation_pb2.TASK_STATUS_RUNNING),
        automation_pb2.StartTaskResponse(user_requested=automation_pb2.UserRequested()),
    ):
        assert project(session, event, LATER).state is ControlState.AI_CONTROL


@pytest.mark.parametrize(
    ("state", "after"),
    [
        (ControlState.AI_CONTROL, ControlState.FINISHED),
        (ControlState.PAUSED, ControlState.FINISHED),
        (ControlState.USER_CONTROL, ControlState.USER_CONTROL),
    ],
)
def test_a_lost_task_is_cancelled_and_finishes_the_agent(
    state: ControlState, after: ControlState
) -> None:
    lost = task_lost(make_session(state), LATER)
    assert (lost.state, lost.task.status) == (after, TaskStatus.CANCELLED)
