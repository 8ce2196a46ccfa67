"""Every state-by-action pair of the control state machine (docs/state-machine.md)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from services.runtime.errors import Conflict, FailedPrecondition, InvalidArgument, PermissionDenied
from services.session import state_machine
from services.session.model import (
    Action,
    Actor,
    Controller,
    ControlState,
    EventKind,
    Session,
    TaskStatus,
)
from tests.session.factories import T0, make_session

ALICE = Actor("alice")
BOB = Actor("bob")
OPERATOR = Actor("operator", operator=True)
NOW = T0 + timedelta(seconds=30)

S = ControlState
A = Action
# (state, action) → the state it leads to for alice, or None when refused.
# In USER_CONTROL, alice is the controller.
EXPECTED: dict[tuple[ControlState, Action], ControlState | None] = {
    (S.STARTING, A.TAKE_CONTROL): None,
    (S.STARTING, A.RETURN_CONTROL): None,
    (S.STARTING, A.PAUSE): None,
    (S.STARTING, A.RESUME): None,
    (S.STARTING, A.END): S.ENDED,
    (S.AI_CONTROL, A.TAKE_CONTROL): S.USER_CONTROL,
    (S.AI_CONTROL, A.RETURN_CONTROL): None,
    (S.AI_CONTROL, A.PAUSE): S.PAUSED,
    (S.AI_CONTROL, A.RESUME): None,
    (S.AI_CONTROL, A.END): S.ENDED,
    (S.USER_CONTROL, A.TAKE_CONTROL): S.USER_CONTROL,  # same user: no-op
    (S.USER_CONTROL, A.RETURN_CONTROL): S.AI_CONTROL,
    (S.USER_CONTROL, A.PAUSE): None,
    (S.USER_CONTROL, A.RESUME): None,
    (S.USER_CONTROL, A.END): S.ENDED,
    (S.PAUSED, A.TAKE_CONTROL): S.USER_CONTROL,
    (S.PAUSED, A.RETURN_CONTROL): None,
    (S.PAUSED, A.PAUSE): None,
    (S.PAUSED, A.RESUME): S.AI_CONTROL,
    (S.PAUSED, A.END): S.ENDED,
    # The agent is done (its task COMPLETED here).
    (S.FINISHED, A.TAKE_CONTROL): S.USER_CONTROL,
    (S.FINISHED, A.RETURN_CONTROL): None,
    (S.FINISHED, A.PAUSE): None,
    (S.FINISHED, A.RESUME): None,
    (S.FINISHED, A.END): S.ENDED,
    (S.ENDED, A.TAKE_CONTROL): None,
    (S.ENDED, A.RETURN_CONTROL): None,
    (S.ENDED, A.PAUSE): None,
    (S.ENDED, A.RESUME): None,
    (S.ENDED, A.END): None,
    (S.FAILED, A.TAKE_CONTROL): None,
    (S.FAILED, A.RETURN_CONTROL): None,
    (S.FAILED, A.PAUSE): None,
    (S.FAILED, A.RESUME): None,
    (S.FAILED, A.END): None,
}
# hand_over: between people, from USER_CONTROL only.
EXPECTED.update({(state, A.HAND_OVER): None for state in S})
EXPECTED[(S.USER_CONTROL, A.HAND_OVER)] = S.USER_CONTROL


def test_table_covers_every_state_and_action() -> None:
    assert set(EXPECTED) == {(s, a) for s in ControlState for a in Action}


@pytest.mark.parametrize(("state", "action"), list(EXPECTED))
def test_transition(state: ControlState, action: Action) -> None:
    session = make_session(state)
    target = EXPECTED[(state, action)]
    if target is None:
        with pytest.raises(FailedPrecondition) as refused:
            state_machine.apply(session, action, ALICE, NOW, to_user_id="carol")
        # The message names both the state and the action.
        assert state.value in refused.value.message
        assert action.value in refused.value.message
        return
    changed = state_machine.apply(session, action, ALICE, NOW, to_user_id="carol")
    assert changed.state is target
    if changed is session:  # the no-op
        assert (state, action) == (S.USER_CONTROL, A.TAKE_CONTROL)
        return
    assert changed.version == session.version + 1
    assert changed.updated_at == NOW
    expected_controller = {S.AI_CONTROL: Controller.AI, S.USER_CONTROL: Controller.USER}
    assert changed.controller is expected_controller.get(target)
    holder = "carol" if action is A.HAND_OVER else "alice"
    assert changed.controller_user_id == (holder if target is S.USER_CONTROL else "")
    expected_kind = EventKind.ENDED if target is S.ENDED else EventKind.CONTROL_CHANGED
    assert changed.last_event.kind is expected_kind


def test_the_controller_or_an_operator_hands_control_to_another_person() -> None:
    session = make_session(S.USER_CONTROL)
    with pytest.raises(PermissionDenied):
        state_machine.apply(session, A.HAND_OVER, BOB, NOW, to_user_id="bob")
    for bad in ("", "alice"):
        with pytest.raises(InvalidArgument, match="hand_over needs"):
            state_machine.apply(session, A.HAND_OVER, ALICE, NOW, to_user_id=bad)
    handed = state_machine.apply(session, A.HAND_OVER, OPERATOR, NOW, to_user_id="bob")
    assert (handed.state, handed.controller_user_id) == (S.USER_CONTROL, "bob")
    assert not state_machine.same_control(session, handed)


def test_another_user_cannot_take_control_held_by_someone() -> None:
    with pytest.raises(FailedPrecondition, match="take_control while the session is USER_CONTROL"):
        state_machine.apply(make_session(S.USER_CONTROL), A.TAKE_CONTROL, BOB, NOW)


def test_only_the_controller_or_an_operator_returns_control() -> None:
    session = make_session(S.USER_CONTROL)
    with pytest.raises(PermissionDenied):
        state_machine.apply(session, A.RETURN_CONTROL, BOB, NOW)
    returned = state_machine.apply(session, A.RETURN_CONTROL, OPERATOR, NOW)
    assert returned.state is S.AI_CONTROL
    assert returned.controller is Controller.AI


def test_an_expected_version_is_stale_only_after_a_change_of_control() -> None:
    # Control last changed at version 5; the agent's steps took it to 7.
    session = replace(make_session(S.AI_CONTROL, version=7), control_version=5)
    for seen in (5, 6, 7):
        taken = state_machine.apply(session, A.TAKE_CONTROL, ALICE, NOW, expected_version=seen)
        assert (taken.state, taken.version) == (S.USER_CONTROL, 8)
    with pytest.raises(Conflict, match="control changed at version 5, after the expected 4"):
        state_machine.apply(session, A.TAKE_CONTROL, ALICE, NOW, expected_version=4)
    with pytest.raises(Conflict, match="at version 7, not the expected 8"):
        state_machine.apply(session, A.TAKE_CONTROL, ALICE, NOW, expected_version=8)


def test_a_change_of_control_notes_its_version() -> None:
    before = replace(make_session(S.AI_CONTROL, version=7), control_version=5)
    taken = state_machine.apply(before, A.TAKE_CONTROL, ALICE, NOW)
    assert state_machine.with_control_version(before, taken).control_version == taken.version
    # A step report moves the version on, not the control version.
    stepped = replace(before, version=8)
    assert state_machine.with_control_version(before, stepped).control_version == 5


def test_ready_and_finish() -> None:
    ready = state_machine.mark_ready(make_session(S.STARTING), NOW)
    assert (ready.state, ready.controller) == (S.AI_CONTROL, Controller.AI)
    with pytest.raises(FailedPrecondition):
        state_machine.mark_ready(ready, NOW)
    failed = state_machine.finish(ready, NOW, "display failed", failed=True)
    assert (failed.state, failed.ended_reason) == (S.FAILED, "display failed")
    assert failed.controller is None
    with pytest.raises(FailedPrecondition):
        state_machine.finish(failed, NOW, "again", failed=False)


DONE = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


def with_task(session: Session, status: TaskStatus) -> Session:
    return replace(session, task=replace(session.task, status=status))


@pytest.mark.parametrize("status", DONE)
def test_control_returned_after_the_agent_is_done_is_finished(status: TaskStatus) -> None:
    """A person who took over and hands back a session whose agent is done
    leaves it FINISHED (nobody in control), not AI_CONTROL with no agent."""
    session = with_task(make_session(S.USER_CONTROL), status)
    for actor in (ALICE, OPERATOR):
        returned = state_machine.apply(session, A.RETURN_CONTROL, actor, NOW)
        assert (returned.state, returned.controller, returned.controller_user_id) == (
            S.FINISHED,
            None,
            "",
        )
        assert returned.last_event.kind is EventKind.CONTROL_CHANGED
        assert returned.task.status is status


@pytest.mark.parametrize("status", DONE)
def test_resuming_an_agent_that_is_done_is_finished(status: TaskStatus) -> None:
    session = with_task(make_session(S.PAUSED), status)
    assert state_machine.apply(session, A.RESUME, ALICE, NOW).state is S.FINISHED


@pytest.mark.parametrize("status", [TaskStatus.PENDING, TaskStatus.RUNNING])
def test_control_returned_while_the_agent_works_goes_to_the_agent(status: TaskStatus) -> None:
    session = with_task(make_session(S.USER_CONTROL), status)
    assert state_machine.apply(session, A.RETURN_CONTROL, ALICE, NOW).state is S.AI_CONTROL


def test_a_finished_session_taken_and_returned_is_finished_again() -> None:
    finished = make_session(S.FINISHED, version=4)
    taken = state_machine.apply(finished, A.TAKE_CONTROL, BOB, NOW, expected_version=4)
    assert (taken.state, taken.controller_user_id, taken.version) == (S.USER_CONTROL, "bob", 5)
    returned = state_machine.apply(taken, A.RETURN_CONTROL, BOB, NOW)
    assert (returned.state, returned.controller, returned.version) == (S.FINISHED, None, 6)


@pytest.mark.parametrize("state", [S.AI_CONTROL, S.PAUSED])
@pytest.mark.parametrize("status", DONE)
def test_an_agent_done_in_ai_control_or_paused_finishes_the_session(
    state: ControlState, status: TaskStatus
) -> None:
    session = with_task(make_session(state, version=3), status)
    done = state_machine.agent_done(session)
    assert (done.state, done.controller, done.controller_user_id) == (S.FINISHED, None, "")
    # The task event that ended the task made the version bump already.
    assert done.version == 3


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (S.USER_CONTROL, TaskStatus.COMPLETED),  # the person keeps control
        (S.AI_CONTROL, TaskStatus.RUNNING),
        (S.PAUSED, TaskStatus.WAITING_FOR_USER),
        (S.STARTING, TaskStatus.COMPLETED),
        (S.ENDED, TaskStatus.COMPLETED),
    ],
)
def test_agent_done_changes_nothing_else(state: ControlState, status: TaskStatus) -> None:
    session = with_task(make_session(state), status)
    assert state_machine.agent_done(session) == session


@pytest.mark.parametrize(
    "status", [TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.WAITING_FOR_USER]
)
@pytest.mark.parametrize("failed", [False, True])
def test_a_session_ended_mid_task_reports_its_task_cancelled(
    status: TaskStatus, failed: bool
) -> None:
    session = replace(with_task(make_session(S.AI_CONTROL), status), user_request_reason="sign in")
    ended = state_machine.finish(session, NOW, "ended by the user", failed=failed)
    assert (ended.task.status, ended.task.reason) == (TaskStatus.CANCELLED, "ended by the user")
    assert ended.user_request_reason == ""
    by_action = state_machine.apply(session, A.END, ALICE, NOW)
    assert by_action.task.status is TaskStatus.CANCELLED


@pytest.mark.parametrize("status", DONE)
def test_a_finished_task_keeps_its_status_when_the_session_ends(status: TaskStatus) -> None:
    session = with_task(make_session(S.FINISHED), status)
    ended = state_machine.finish(session, NOW, "finished and idle for 120 s", failed=False)
    assert (ended.state, ended.task.status) == (S.ENDED, status)


def test_the_agent_finishing_is_no_change_of_control() -> None:
    """A take_control checked against AI_CONTROL still holds once the agent
    finished meanwhile (handoff.py); a person's change of control does not."""
    before = make_session(S.AI_CONTROL)
    finished = state_machine.agent_done(with_task(before, TaskStatus.COMPLETED))
    assert state_machine.same_control(before, finished)
    assert state_machine.same_control(make_session(S.PAUSED), finished)
    returned = state_machine.apply(
        with_task(make_session(S.USER_CONTROL), TaskStatus.COMPLETED), A.RETURN_CONTROL, ALICE, NOW
    )
    assert not state_machine.same_control(make_session(S.USER_CONTROL), returned)
