"""Session ↔ bytes (for stores) and Session ↔ protobuf (for the API)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from baton.automation.v1 import automation_pb2
from baton.display.v1 import display_pb2
from baton.session.v1 import session_pb2
from services.session.audit_log import AuditEvent
from services.session.input_buckets import InputBucket
from services.session.model import (
    Action,
    AutoReturn,
    Controller,
    ControlState,
    EventKind,
    LastEvent,
    Placement,
    Recording,
    Session,
    Share,
    ShareRole,
    Task,
    TaskStatus,
    TimelineEntry,
    Viewport,
)

# --- stored form: JSON, with protobuf leaves as base64 of their wire form ---


def _b64(message: Any) -> str:
    return base64.b64encode(message.SerializeToString()).decode()


def _step(data: str) -> automation_pb2.Step:
    return automation_pb2.Step.FromString(base64.b64decode(data))


def _step_event(data: str) -> automation_pb2.StepEvent:
    return automation_pb2.StepEvent.FromString(base64.b64decode(data))


# A step of the log is stored as its wire form (store.py: the step log).
def encode_step(step: automation_pb2.StepEvent) -> bytes:
    return step.SerializeToString()


def decode_step(raw: bytes) -> automation_pb2.StepEvent:
    return automation_pb2.StepEvent.FromString(raw)


def legacy_steps(raw: bytes) -> tuple[automation_pb2.StepEvent, ...]:
    """The step events a record stored before steps had their own log kept
    inside it (sqlite_store.py moves them to the log)."""
    return tuple(_step_event(s) for s in json.loads(raw).get("steps", ()))


def encode(session: Session) -> bytes:
    task = session.task
    event = session.last_event
    placement = session.placement
    data = {
        "id": session.id,
        "owner": session.owner_user_id,
        "task": {
            "text": task.text,
            "url": task.url,
            "maxSteps": task.max_steps,
            "steps": [_b64(s) for s in task.steps],
            "planner": task.planner,
            "status": task.status.value,
            "stepsCompleted": task.steps_completed,
            "reason": task.reason,
            "eventsApplied": task.events_applied,
        },
        "viewport": [session.viewport.width, session.viewport.height],
        "createdAt": session.created_at.isoformat(),
        "updatedAt": session.updated_at.isoformat(),
        "lastActivityAt": session.last_activity_at.isoformat(),
        "state": session.state.value,
        "controller": session.controller.value if session.controller else None,
        "controllerUserId": session.controller_user_id,
        "version": session.version,
        "controlVersion": session.control_version,
        "stepCount": session.step_count,
        "endedReason": session.ended_reason,
        "placement": placement.__dict__ if placement else None,
        "userRequestReason": session.user_request_reason,
        "viewerCount": session.viewer_count,
        "viewersSeenAt": session.viewers_seen_at.isoformat() if session.viewers_seen_at else None,
        "shares": [_encode_share(share) for share in session.shares],
        "lastEvent": {
            "kind": event.kind.value,
            "action": event.action.value if event.action else None,
            "step": _b64(event.step) if event.step else None,
            "message": event.message,
        },
        "record": session.record,
        "pauseRecordingDuringTakeover": session.pause_recording_during_takeover,
        "recording": {
            "hostId": session.recording.host_id,
            "startedAt": session.recording.started_at.isoformat(),
        }
        if session.recording
        else None,
        "timeline": [
            {
                "at": e.at.isoformat(),
                "action": e.action.value if e.action else None,
                "userId": e.user_id,
                "state": e.state.value,
                "reason": e.reason,
            }
            for e in session.timeline
        ],
        "handback": _b64(session.handback) if session.handback is not None else None,
        "autoReturn": session.auto_return.__dict__ if session.auto_return else None,
        "userRequestAutoReturn": session.user_request_auto_return.__dict__
        if session.user_request_auto_return
        else None,
        "lastInputAt": session.last_input_at.isoformat() if session.last_input_at else None,
        # [unix second, keys, pointer]: compact, as a session keeps hundreds.
        "inputs": [[int(b.at.timestamp()), b.keys, b.pointer] for b in session.inputs],
    }
    return json.dumps(data, separators=(",", ":")).encode()


def _encode_share(share: Share) -> dict[str, str]:
    return {
        "id": share.id,
        "role": share.role.value,
        "createdBy": share.created_by,
        "createdAt": share.created_at.isoformat(),
        "expiresAt": share.expires_at.isoformat(),
        "label": share.label,
    }


def _decode_share(data: dict[str, str]) -> Share:
    return Share(
        id=data["id"],
        role=ShareRole(data["role"]),
        created_by=data["createdBy"],
        created_at=datetime.fromisoformat(data["createdAt"]),
        expires_at=datetime.fromisoformat(data["expiresAt"]),
        label=data["label"],
    )


def decode(raw: bytes) -> Session:
    data = json.loads(raw)
    task = data["task"]
    event = data["lastEvent"]
    return Session(
        id=data["id"],
        owner_user_id=data["owner"],
        task=Task(
            text=task["text"],
            url=task["url"],
            max_steps=task["maxSteps"],
            steps=tuple(_step(s) for s in task["steps"]),
            planner=task["planner"],
            status=TaskStatus(task["status"]),
            steps_completed=task["stepsCompleted"],
            reason=task["reason"],
            # Absent from records stored before tasks were followed by seq.
            events_applied=task.get("eventsApplied", 0),
        ),
        viewport=Viewport(*data["viewport"]),
        created_at=datetime.fromisoformat(data["createdAt"]),
        updated_at=datetime.fromisoformat(data["updatedAt"]),
        last_activity_at=datetime.fromisoformat(data["lastActivityAt"]),
        state=ControlState(data["state"]),
        controller=Controller(data["controller"]) if data["controller"] else None,
        controller_user_id=data["controllerUserId"],
        version=data["version"],
        # Absent from records stored before it: any version up to the current passes.
        control_version=data.get("controlVersion", 0),
        # Records from before the step log held their steps ("steps").
        step_count=data.get("stepCount", len(data.get("steps", ()))),
        ended_reason=data["endedReason"],
        placement=Placement(**data["placement"]) if data["placement"] else None,
        user_request_reason=data["userRequestReason"],
        viewer_count=data["viewerCount"],
        viewers_seen_at=datetime.fromisoformat(data["viewersSeenAt"])
        if data.get("viewersSeenAt")
        else None,
        # Absent from records stored before shares.
        shares=tuple(_decode_share(share) for share in data.get("shares", ())),
        last_event=LastEvent(
            kind=EventKind(event["kind"]),
            action=Action(event["action"]) if event["action"] else None,
            step=_step_event(event["step"]) if event["step"] else None,
            message=event["message"],
        ),
        # Absent from records stored before recordings.
        record=data.get("record", False),
        pause_recording_during_takeover=data.get("pauseRecordingDuringTakeover", False),
        recording=Recording(
            host_id=data["recording"]["hostId"],
            started_at=datetime.fromisoformat(data["recording"]["startedAt"]),
        )
        if data.get("recording")
        else None,
        timeline=tuple(
            TimelineEntry(
                at=datetime.fromisoformat(e["at"]),
                action=Action(e["action"]) if e["action"] else None,
                user_id=e["userId"],
                state=ControlState(e["state"]),
                reason=e["reason"],
            )
            for e in data.get("timeline", ())
        ),
        auto_return=AutoReturn(**data["autoReturn"]) if data.get("autoReturn") else None,
        user_request_auto_return=AutoReturn(**data["userRequestAutoReturn"])
        if data.get("userRequestAutoReturn")
        else None,
        last_input_at=datetime.fromisoformat(data["lastInputAt"])
        if data.get("lastInputAt")
        else None,
        # Absent from records stored before input counts.
        inputs=tuple(
            InputBucket(datetime.fromtimestamp(at, UTC), keys, pointer)
            for at, keys, pointer in data.get("inputs", ())
        ),
        # Absent from records stored before hand-back reports.
        handback=automation_pb2.Handback.FromString(base64.b64decode(data["handback"]))
        if data.get("handback")
        else None,
    )


# --- API form: baton.session.v1 messages ---

_STATE_TO_PROTO = {
    ControlState.STARTING: session_pb2.CONTROL_STATE_STARTING,
    ControlState.AI_CONTROL: session_pb2.CONTROL_STATE_AI_CONTROL,
    ControlState.USER_CONTROL: session_pb2.CONTROL_STATE_USER_CONTROL,
    ControlState.PAUSED: session_pb2.CONTROL_STATE_PAUSED,
    ControlState.FINISHED: session_pb2.CONTROL_STATE_FINISHED,
    ControlState.ENDED: session_pb2.CONTROL_STATE_ENDED,
    ControlState.FAILED: session_pb2.CONTROL_STATE_FAILED,
}

ACTION_FROM_PROTO = {
    session_pb2.CONTROL_ACTION_TAKE_CONTROL: Action.TAKE_CONTROL,
    session_pb2.CONTROL_ACTION_RETURN_CONTROL: Action.RETURN_CONTROL,
    session_pb2.CONTROL_ACTION_PAUSE: Action.PAUSE,
    session_pb2.CONTROL_ACTION_RESUME: Action.RESUME,
    session_pb2.CONTROL_ACTION_END: Action.END,
    session_pb2.CONTROL_ACTION_HAND_OVER: Action.HAND_OVER,
}
ACTION_TO_PROTO = {action: number for number, action in ACTION_FROM_PROTO.items()}

TASK_STATUS_TO_PROTO = {
    TaskStatus.PENDING: automation_pb2.TASK_STATUS_PENDING,
    TaskStatus.RUNNING: automation_pb2.TASK_STATUS_RUNNING,
    TaskStatus.WAITING_FOR_USER: automation_pb2.TASK_STATUS_WAITING_FOR_USER,
    TaskStatus.COMPLETED: automation_pb2.TASK_STATUS_COMPLETED,
    TaskStatus.FAILED: automation_pb2.TASK_STATUS_FAILED,
    TaskStatus.CANCELLED: automation_pb2.TASK_STATUS_CANCELLED,
}
TASK_STATUS_FROM_PROTO = {number: status for status, number in TASK_STATUS_TO_PROTO.items()}

_CONTROLLER_TO_PROTO = {
    None: session_pb2.CONTROLLER_UNSPECIFIED,
    Controller.AI: session_pb2.CONTROLLER_AI,
    Controller.USER: session_pb2.CONTROLLER_USER,
}


SHARE_ROLE_TO_PROTO = {
    ShareRole.VIEW: session_pb2.SHARE_ROLE_VIEW,
    ShareRole.CONTROL: session_pb2.SHARE_ROLE_CONTROL,
}
SHARE_ROLE_FROM_PROTO = {number: role for role, number in SHARE_ROLE_TO_PROTO.items()}


def share_to_proto(share: Share) -> session_pb2.Share:
    return session_pb2.Share(
        id=share.id,
        role=SHARE_ROLE_TO_PROTO[share.role],
        created_by=share.created_by,
        create_time=timestamp(share.created_at),
        expire_time=timestamp(share.expires_at),
        label=share.label,
    )


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def to_proto(
    session: Session, steps: tuple[automation_pb2.StepEvent, ...] | None = None
) -> session_pb2.Session:
    """The session's summary view; its full view (the steps asked for and the
    step events) when `steps` is given (session.proto, `Session`)."""
    task = session.task
    full = steps is not None
    placement = session.placement
    return session_pb2.Session(
        id=session.id,
        state=_STATE_TO_PROTO[session.state],
        controller=_CONTROLLER_TO_PROTO[session.controller],
        controller_user_id=session.controller_user_id,
        version=session.version,
        owner_user_id=session.owner_user_id,
        task=session_pb2.Task(
            text=task.text,
            url=task.url,
            max_steps=task.max_steps,
            status=TASK_STATUS_TO_PROTO[task.status],
            steps_completed=task.steps_completed,
            steps=task.steps if full else (),
            reason=task.reason,
        ),
        steps=steps or (),
        step_count=session.step_count,
        create_time=timestamp(session.created_at),
        update_time=timestamp(session.updated_at),
        ended_reason=session.ended_reason,
        viewport=display_pb2.Viewport(width=session.viewport.width, height=session.viewport.height),
        placement=session_pb2.Placement(
            host_id=placement.host_id,
            slot_id=placement.slot_id,
            display=placement.display,
            websocket_url=placement.websocket_url,
            automation_address=placement.automation_address,
            display_address=placement.display_address,
            host_epoch=placement.host_epoch,
        )
        if placement
        else None,
        user_request_reason=session.user_request_reason,
        recording=session_pb2.Recording(
            host_id=session.recording.host_id,
            start_time=timestamp(session.recording.started_at),
            paused_during_takeover=session.pause_recording_during_takeover,
        )
        if session.recording
        else None,
        timeline=[
            session_pb2.TimelineEntry(
                time=timestamp(e.at),
                action=ACTION_TO_PROTO[e.action]
                if e.action
                else session_pb2.CONTROL_ACTION_UNSPECIFIED,
                user_id=e.user_id,
                state=_STATE_TO_PROTO[e.state],
                reason=e.reason,
            )
            for e in session.timeline
        ]
        if full
        else (),
        inputs=[
            session_pb2.InputBucket(time=timestamp(b.at), keys=b.keys, pointer=b.pointer)
            for b in session.inputs
        ]
        if full
        else (),
        handback=session.handback,
        auto_return=automation_pb2.AutoReturn(
            url_matches=session.auto_return.url_matches,
            selector_appears=session.auto_return.selector_appears,
            idle_seconds=session.auto_return.idle_seconds,
        )
        if session.auto_return
        else None,
    )


def event_to_proto(session: Session) -> session_pb2.WatchSessionResponse | None:
    """The WatchSession event for the session's latest change, if watchers care:
    what changed and the session's summary, never its steps (a step event
    carries its one new step)."""
    message = to_proto(session)
    event = session.last_event
    match event.kind:
        case EventKind.CREATED:
            return session_pb2.WatchSessionResponse(
                created=session_pb2.SessionCreated(session=message)
            )
        case EventKind.STEP:
            return session_pb2.WatchSessionResponse(
                step=session_pb2.StepReported(session=message, step=event.step)
            )
        case EventKind.CONTROL_CHANGED:
            return session_pb2.WatchSessionResponse(
                control_changed=session_pb2.ControlChanged(
                    session=message,
                    action=ACTION_TO_PROTO[event.action]
                    if event.action
                    else session_pb2.CONTROL_ACTION_UNSPECIFIED,
                )
            )
        case EventKind.TASK_CHANGED:
            return session_pb2.WatchSessionResponse(
                task_changed=session_pb2.TaskChanged(session=message)
            )
        case EventKind.ERROR:
            return session_pb2.WatchSessionResponse(
                error=session_pb2.SessionError(session=message, message=event.message)
            )
        case EventKind.ENDED:
            return session_pb2.WatchSessionResponse(
                ended=session_pb2.SessionEnded(session=message, reason=session.ended_reason)
            )
        case EventKind.SHARES_CHANGED:
            return session_pb2.WatchSessionResponse(
                shares_changed=session_pb2.SharesChanged(
                    session=message, live_share_ids=[share.id for share in session.shares]
                )
            )
        case EventKind.CONTROL_REQUESTED:
            return session_pb2.WatchSessionResponse(
                control_requested=session_pb2.ControlRequested(
                    session=message, user_id=event.message
                )
            )
        case EventKind.BOOKKEEPING:
            return None


def audit_to_proto(event: AuditEvent) -> session_pb2.AuditEvent:
    return session_pb2.AuditEvent(
        time=timestamp(event.at),
        session_id=event.session_id,
        kind=event.kind.value,
        user_id=event.user_id,
        source_address=event.source_address,
        detail_json=json.dumps(dict(event.detail), separators=(",", ":")),
    )
