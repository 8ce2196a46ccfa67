"""Webhook events: which change of a session is which event, its body and signature.

Pure functions (no I/O). A webhook event is derived from one committed change of a
session record (the `before` and `after` of a compare-and-swap that won), so the
replica that made the change is the one that sends it, once (README.md, "Webhooks").
webhook_delivery.py posts them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from services.session import state_machine
from services.session.model import EventKind, Session, TaskStatus

WAITING_FOR_USER = "session.waiting_for_user"
CONTROL_CHANGED = "session.control_changed"
ENDED = "session.ended"
TASK_COMPLETED = "task.completed"
TASK_FAILED = "task.failed"
EVENT_TYPES = (WAITING_FOR_USER, CONTROL_CHANGED, ENDED, TASK_COMPLETED, TASK_FAILED)

SIGNATURE_HEADER = "Baton-Signature"

_TASK_EVENTS = {
    TaskStatus.WAITING_FOR_USER: WAITING_FOR_USER,
    TaskStatus.COMPLETED: TASK_COMPLETED,
    TaskStatus.FAILED: TASK_FAILED,
}


@dataclass(frozen=True)
class WebhookEvent:
    type: str
    session_id: str
    at: datetime
    data: dict[str, Any] = field(default_factory=dict)


class WebhookSink(Protocol):
    def send(self, event: WebhookEvent) -> None:
        """Queue the event for delivery; never waits for the receiver."""
        ...


def _controller(session: Session) -> str | None:
    return None if session.controller is None else session.controller.value


def events_of_change(before: Session, after: Session) -> list[WebhookEvent]:
    """The webhook events one committed change makes (none for most changes)."""
    events: list[WebhookEvent] = []

    def event(kind: str, **data: Any) -> None:
        events.append(WebhookEvent(kind, after.id, after.updated_at, data))

    control = {
        "state": after.state.value,
        "controller": _controller(after),
        "controllerUserId": after.controller_user_id or None,
        "version": after.version,
    }
    action = after.last_event.action
    if after.state.terminal and not before.state.terminal:
        event(ENDED, reason=after.ended_reason, **control)
    elif after.last_event.kind is EventKind.CONTROL_CHANGED and not state_machine.same_control(
        before, after
    ):
        # STARTING -> AI_CONTROL (the session is ready) has no action.
        event(CONTROL_CHANGED, action=action.value if action else None, **control)
    task_kind = _TASK_EVENTS.get(after.task.status)
    if task_kind is not None and before.task.status is not after.task.status:
        reason = after.user_request_reason if task_kind == WAITING_FOR_USER else after.task.reason
        event(
            task_kind,
            reason=reason,
            stepsCompleted=after.task.steps_completed,
            version=after.version,
        )
    return events


def webhook_observer(sink: WebhookSink) -> Callable[[Session, Session], None]:
    """What records.py calls with each committed change: its events to `sink`."""

    def observe(before: Session, after: Session) -> None:
        for event in events_of_change(before, after):
            sink.send(event)

    return observe


def body_of(event: WebhookEvent) -> bytes:
    """The JSON body: {"type", "sessionId", "at", "data"}."""
    at = event.at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    payload = {"type": event.type, "sessionId": event.session_id, "at": at, "data": event.data}
    return json.dumps(payload, separators=(",", ":")).encode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The Baton-Signature header: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""
    signed = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
