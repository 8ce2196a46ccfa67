"""Every state-by-action pair of the control state machine (docs/state-machine.md)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.runtime.errors import Conflict, FailedPrecondition, PermissionDenied
from services.session import state_machine
from services.session.model import Action, Actor, Controller, ControlState, EventKind
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


def test_table_covers_every_state_and_action() -> None:
    assert set(EXPECTED) == {(s, a) for s in ControlState for a in Action}


@pytest.mark.parametrize(("state", "action"), list(EXPECTED))
def test_transition(state: ControlState, action: Action) -> None:
    session = make_session(state)
    target = EXPECTED[(state, action)]
    if target is None:
        with pytest.raises(FailedPrecondition) as refused:
            state_machine.apply(session, action, ALICE, NOW)
        # The message names both the state and the action.
        assert state.value in refused.value.message
        assert action.value in refused.value.message
        return
    changed = state_machine.apply(session, action, ALICE, NOW)
    assert changed.state is target
    if changed is session:  # the no-op
        assert (state, action) == (S.USER_CONTROL, A.TAKE_CONTROL)
        return
    assert changed.version == session.version + 1
    assert changed.updated_at == NOW
    expected_controller = {S.AI_CONTROL: Controller.AI, S.USER_CONTROL: Controller.USER}
    assert changed.controller is expected_controller.get(target)
    assert changed.controller_user_id == ("alice" if target is S.USER_CONTROL else "")
    expected_kind = EventKind.ENDED if target is S.ENDED else EventKind.CONTROL_CHANGED
    assert changed.last_event.kind is expected_kind


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


def test_stale_expected_version_is_a_conflict() -> None:
    session = make_session(S.AI_CONTROL, version=7)
    with pytest.raises(Conflict, match="version 7"):
        state_machine.apply(session, A.TAKE_CONTROL, ALICE, NOW, expected_version=6)
    taken = state_machine.apply(session, A.TAKE_CONTROL, ALICE, NOW, expected_version=7)
    assert taken.version == 8


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
