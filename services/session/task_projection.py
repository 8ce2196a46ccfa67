"""Task projection: what an automation task event changes in its session.

A pure function of the session, the event and the time (no I/O), so each kind
of event is unit-tested on its own (tests/session/test_task_projection.py).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from baton.automation.v1 import automation_pb2
from services.runtime.limits import truncate_text
from services.session.codec import TASK_STATUS_FROM_PROTO
from services.session.failure_reasons import TASK_INTERRUPTED
from services.session.model import AutoReturn, EventKind, LastEvent, Session, TaskStatus
from services.session.state_machine import agent_done

# Said when the agent asks for a person without saying why.
DEFAULT_USER_REQUEST = "the agent asks for a person"


def bounded_step_event(event: automation_pb2.StepEvent) -> automation_pb2.StepEvent:
    """The event as stored: its texts cut to the stored-field bound."""
    bounded = automation_pb2.StepEvent()
    bounded.CopyFrom(event)
    for name in ("action", "description", "url", "error", "result"):
        setattr(bounded, name, truncate_text(getattr(event, name)))
    return bounded


def _stamp(report: automation_pb2.Handback, stamped: automation_pb2.Handback | None) -> None:
    if stamped is not None:
        report.returned_by = stamped.returned_by
        report.returned_at.CopyFrom(stamped.returned_at)
        report.reason = stamped.reason
        report.condition = stamped.condition


def project(session: Session, event: automation_pb2.StartTaskResponse, now: datetime) -> Session:
    """The session after `event`; `session` itself (unchanged) when the event
    changes nothing: an ended session, an event already applied (its seq is not
    above the task's `events_applied`; 0 is an unnumbered event, always applied),
    or an event kind it does not know. A task that ends leaves the session to a
    person: AI_CONTROL or PAUSED become FINISHED (state_machine.agent_done)."""
    applied = session.task.events_applied
    if session.state.terminal or 0 < event.seq <= applied:
        return session
    task = replace(session.task, events_applied=max(applied, event.seq))
    reason = session.user_request_reason
    conditions = session.user_request_auto_return
    last = LastEvent(EventKind.TASK_CHANGED)
    step_count = session.step_count
    kind = event.WhichOneof("event")
    if kind == "step":
        step = bounded_step_event(event.step)
        # The step goes to the session's step log, appended with this change
        # (records.py); the record counts it and names it as its last event.
        step_count += 1
        if step.HasField("handback"):
            # The hand-back step: automation's report, stamped as the session's
            # (who returned control, when, why: handoff.py), and no step of the task.
            _stamp(step.handback, session.handback)
        elif step.status == automation_pb2.STEP_STATUS_SUCCEEDED:
            task = replace(task, steps_completed=task.steps_completed + 1)
        last = LastEvent(EventKind.STEP, step=step)
    elif kind == "status_changed":
        changed = event.status_changed
        status = TASK_STATUS_FROM_PROTO.get(changed.status, task.status)
        task = replace(
            task,
            status=status,
            reason=truncate_text(changed.reason),
            steps_completed=max(task.steps_completed, changed.steps_completed),
        )
        if status is not TaskStatus.WAITING_FOR_USER:
            reason, conditions = "", None
        if status is TaskStatus.FAILED:
            last = LastEvent(
                EventKind.ERROR, message=truncate_text(f"task failed: {changed.reason}")
            )
    elif kind == "user_requested":
        requested = event.user_requested
        reason = truncate_text(requested.reason or DEFAULT_USER_REQUEST)
        conditions = (
            AutoReturn(
                url_matches=requested.auto_return.url_matches,
                selector_appears=requested.auto_return.selector_appears,
                idle_seconds=requested.auto_return.idle_seconds,
            )
            if requested.HasField("auto_return")
            else None
        )
        task = replace(task, status=TaskStatus.WAITING_FOR_USER, reason=reason)
    else:
        return session
    return agent_done(
        replace(
            session,
            task=task,
            step_count=step_count,
            user_request_reason=reason,
            user_request_auto_return=conditions,
            version=session.version + 1,
            updated_at=now,
            last_activity_at=now,
            last_event=last,
        )
    )


def task_lost(session: Session, now: datetime) -> Session:
    """The session after its running task was found gone: CANCELLED, saying so,
    and FINISHED unless a person holds control; `session` itself when it has no
    running task."""
    if session.state.terminal or not session.task.status.active:
        return session
    task = replace(session.task, status=TaskStatus.CANCELLED, reason=TASK_INTERRUPTED)
    return agent_done(
        replace(
            session,
            task=task,
            user_request_reason="",
            version=session.version + 1,
            updated_at=now,
            last_event=LastEvent(EventKind.TASK_CHANGED),
        )
    )
