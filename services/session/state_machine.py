"""The control state machine (docs/state-machine.md), as pure functions.

Who may act on a session, and what each action does to its control state. No
I/O: the orchestrator pauses or resumes automation around these decisions and the
store makes them atomic.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from services.runtime.errors import Conflict, FailedPrecondition, InvalidArgument, PermissionDenied
from services.runtime.limits import MAX_TIMELINE_ENTRIES
from services.session.model import (
    Action,
    Actor,
    Controller,
    ControlState,
    EventKind,
    LastEvent,
    Session,
    TaskStatus,
    TimelineEntry,
)

# Allowed (state, action) → new state. Everything else is refused, except the
# same user taking control again, which is a no-op. AI_CONTROL as a target means
# "back to the agent": FINISHED instead when the agent is done (`_to_agent`).
_TRANSITIONS: dict[tuple[ControlState, Action], ControlState] = {
    (ControlState.AI_CONTROL, Action.TAKE_CONTROL): ControlState.USER_CONTROL,
    (ControlState.AI_CONTROL, Action.PAUSE): ControlState.PAUSED,
    (ControlState.PAUSED, Action.TAKE_CONTROL): ControlState.USER_CONTROL,
    (ControlState.PAUSED, Action.RESUME): ControlState.AI_CONTROL,
    (ControlState.USER_CONTROL, Action.RETURN_CONTROL): ControlState.AI_CONTROL,
    (ControlState.USER_CONTROL, Action.HAND_OVER): ControlState.USER_CONTROL,
    (ControlState.FINISHED, Action.TAKE_CONTROL): ControlState.USER_CONTROL,
}
for _state in (
    ControlState.STARTING,
    ControlState.AI_CONTROL,
    ControlState.PAUSED,
    ControlState.USER_CONTROL,
    ControlState.FINISHED,
):
    _TRANSITIONS[(_state, Action.END)] = ControlState.ENDED

# The states in which the agent's own end moves the session to FINISHED: a
# person holding control keeps it (returning it then leads to FINISHED).
_AGENT_SIDE = frozenset({ControlState.AI_CONTROL, ControlState.PAUSED})

_CONTROLLER_IN: dict[ControlState, Controller | None] = {
    ControlState.STARTING: None,
    ControlState.AI_CONTROL: Controller.AI,
    ControlState.USER_CONTROL: Controller.USER,
    ControlState.PAUSED: None,
    ControlState.FINISHED: None,
    ControlState.ENDED: None,
    ControlState.FAILED: None,
}


def check_version(session: Session, expected_version: int | None) -> None:
    """A client's `expected_version` is stale only if control changed after it:
    the agent's progress (step reports, task status) moves the version on without
    making what the person saw of control wrong (README, "The control state machine")."""
    if expected_version is None:
        return
    if expected_version > session.version:
        raise Conflict(
            f"session {session.id} is at version {session.version}, "
            f"not the expected {expected_version}"
        )
    if expected_version < session.control_version:
        raise Conflict(
            f"session {session.id}: control changed at version {session.control_version}, "
            f"after the expected {expected_version}"
        )


def with_control_version(before: Session, after: Session) -> Session:
    """`after`, noting its version as the last change of control when it is one."""
    if after.version == before.version or same_control(before, after):
        return after
    return replace(after, control_version=after.version)


def same_control(before: Session, now: Session) -> bool:
    """Whether control is where it was: the same state and the same controller
    (task events move the version on without changing either). The agent
    finishing on its own (AI_CONTROL or PAUSED to FINISHED) is no change of
    control either: no person took or gave anything meanwhile."""
    if before.state in _AGENT_SIDE and now.state is ControlState.FINISHED:
        return True
    return (before.state, before.controller, before.controller_user_id) == (
        now.state,
        now.controller,
        now.controller_user_id,
    )


def is_noop(session: Session, action: Action, actor: Actor) -> bool:
    """Taking control you already hold changes nothing."""
    return (
        action is Action.TAKE_CONTROL
        and session.state is ControlState.USER_CONTROL
        and session.controller_user_id == actor.user_id
    )


def next_state(session: Session, action: Action, actor: Actor) -> ControlState:
    """The state `action` leads to, or the error saying why it is refused."""
    target = _TRANSITIONS.get((session.state, action))
    if target is None:
        raise FailedPrecondition(
            f"cannot {action.value} while the session is {session.state.value}"
        )
    target = _to_agent(session) if target is ControlState.AI_CONTROL else target
    if (
        action in (Action.RETURN_CONTROL, Action.HAND_OVER)
        and not actor.operator
        and actor.user_id != session.controller_user_id
    ):
        raise PermissionDenied(f"only the user in control or an operator may {action.value}")
    return target


def apply(
    session: Session,
    action: Action,
    actor: Actor,
    now: datetime,
    expected_version: int | None = None,
    reason: str = "",
    to_user_id: str = "",
) -> Session:
    """The session after `action` by `actor`; raises when it is not allowed.
    `to_user_id`: who a hand_over gives control to (the caller checked they may
    have it: share_rules.may_control)."""
    check_version(session, expected_version)
    if is_noop(session, action, actor):
        return session
    target = next_state(session, action, actor)
    holder = ""
    if action is Action.HAND_OVER:
        if not to_user_id or to_user_id == session.controller_user_id:
            raise InvalidArgument("hand_over needs `to`: another person who may take control")
        holder, reason = to_user_id, f"to {to_user_id}"
    return _enter(session, target, now, action=action, actor=actor, reason=reason, holder=holder)


def mark_ready(session: Session, now: datetime) -> Session:
    """STARTING → AI_CONTROL once the display and the task are up."""
    if session.state is not ControlState.STARTING:
        raise FailedPrecondition(f"session {session.id} is {session.state.value}, not STARTING")
    return _enter(session, ControlState.AI_CONTROL, now)


def agent_done(session: Session) -> Session:
    """The session once its task event is applied: an agent whose task is no
    longer active leaves AI_CONTROL or PAUSED for FINISHED (in the same change,
    whose version bump the event already made); anything else is unchanged."""
    if session.state not in _AGENT_SIDE or session.task.status.active:
        return session
    return replace(session, state=ControlState.FINISHED, controller=None, controller_user_id="")


def _to_agent(session: Session) -> ControlState:
    """Where control handed back to the agent lands: FINISHED when it is done."""
    return ControlState.AI_CONTROL if session.task.status.active else ControlState.FINISHED


def finish(session: Session, now: datetime, reason: str, failed: bool) -> Session:
    """End a live session (ENDED, or FAILED when `failed`) with a reason."""
    if session.state.terminal:
        raise FailedPrecondition(f"session {session.id} is already {session.state.value}")
    target = ControlState.FAILED if failed else ControlState.ENDED
    return _enter(session, target, now, reason=reason)


def _enter(
    session: Session,
    target: ControlState,
    now: datetime,
    action: Action | None = None,
    actor: Actor | None = None,
    reason: str = "",
    holder: str = "",
) -> Session:
    """`holder`: who holds control after a hand_over (else the actor, when a user does)."""
    controller = _CONTROLLER_IN[target]
    task = session.task
    if target.terminal:
        event = LastEvent(EventKind.ENDED, action=action, message=reason)
        if task.status.active:
            # Ended mid-task: the task did not run to its end (README, "The
            # control state machine").
            task = replace(task, status=TaskStatus.CANCELLED, reason=reason)
    else:
        event = LastEvent(EventKind.CONTROL_CHANGED, action=action)
    timeline = session.timeline
    if action is not None or target.terminal:
        entry = TimelineEntry(
            at=now,
            action=action,
            user_id=actor.user_id if actor else "",
            state=target,
            reason=reason,
        )
        timeline = (*timeline, entry)[-MAX_TIMELINE_ENTRIES:]
    return replace(
        session,
        task=task,
        user_request_reason="" if target.terminal else session.user_request_reason,
        state=target,
        controller=controller,
        controller_user_id=(holder or actor.user_id)
        if controller is Controller.USER and actor
        else "",
        version=session.version + 1,
        updated_at=now,
        last_activity_at=now,
        ended_reason=reason if target.terminal else session.ended_reason,
        last_event=event,
        timeline=timeline,
    )
