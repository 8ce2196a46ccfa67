"""The step vocabulary of a task (docs/steps.md) and the events a task emits.

Pure data: the proto conversion lives in the servicer, the browser work in the
Playwright adapter. Descriptions never contain a secret: a fill value is shown
only when the caller has established that the field is not a password field.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import urlsplit

from baton.automation.v1.automation_pb2 import AutoReturn
from services.automation.handback import HandbackReport
from services.runtime.redaction import REDACTED, looks_secret


@dataclass(frozen=True)
class Goto:
    url: str


@dataclass(frozen=True)
class Click:
    selector: str


@dataclass(frozen=True)
class Fill:
    selector: str
    value: str


@dataclass(frozen=True)
class Type:
    text: str


@dataclass(frozen=True)
class Press:
    key: str


@dataclass(frozen=True)
class Select:
    selector: str
    value: str


@dataclass(frozen=True)
class Scroll:
    dx: int
    dy: int


@dataclass(frozen=True)
class Wait:
    ms: int


@dataclass(frozen=True)
class WaitFor:
    selector: str


@dataclass(frozen=True)
class Extract:
    selector: str


@dataclass(frozen=True)
class Screenshot:
    pass


@dataclass(frozen=True)
class RequestUser:
    reason: str
    # The conditions of the takeover it asks for (docs/state-machine.md).
    auto_return: AutoReturn | None = None


Action = (
    Goto
    | Click
    | Fill
    | Type
    | Press
    | Select
    | Scroll
    | Wait
    | WaitFor
    | Extract
    | Screenshot
    | RequestUser
)

ACTION_NAMES: dict[type[Action], str] = {
    Goto: "goto",
    Click: "click",
    Fill: "fill",
    Type: "type",
    Press: "press",
    Select: "select",
    Scroll: "scroll",
    Wait: "wait",
    WaitFor: "wait_for",
    Extract: "extract",
    Screenshot: "screenshot",
    RequestUser: "request_user",
}


@dataclass(frozen=True)
class Step:
    action: Action
    # The task goes on when this step fails.
    allow_failure: bool = False
    # Overrides the service's per-action timeout when set.
    timeout_ms: int | None = None


def action_name(action: Action) -> str:
    return ACTION_NAMES[type(action)]


def _quoted(text: str, limit: int = 80) -> str:
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return repr(text)


def describe(action: Action, secret: bool = True) -> str:
    """A one-line, human-readable account of `action`.

    `secret` says whether a fill value or typed text may be a password; it
    defaults to the safe answer, so only a caller that checked the field shows
    the value.
    """
    match action:
        case Goto(url):
            return f"go to {url}"
        case Click(selector):
            return f"click {selector}"
        case Fill(selector, value):
            shown = REDACTED if secret else _quoted(value)
            return f"fill {selector} with {shown}"
        case Type(text):
            return f"type {REDACTED if secret else _quoted(text)}"
        case Press(key):
            return f"press {key}"
        case Select(selector, value):
            return f"select {_quoted(value)} in {selector}"
        case Scroll(dx, dy):
            return f"scroll by ({dx}, {dy})"
        case Wait(ms):
            return f"wait {ms} ms"
        case WaitFor(selector):
            return f"wait for {selector}"
        case Extract(selector):
            return f"read {selector}"
        case Screenshot():
            return "take a screenshot"
        case RequestUser(reason, _):
            return f"ask for a person: {reason}"


class UnsafeUrl(ValueError):
    """A URL the agent may not open (file:, chrome:, javascript:, ...)."""


def check_navigable(url: str) -> str:
    """`url` when the agent may open it: http(s) only, so it cannot read local files."""
    if url == "about:blank":
        return url
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise UnsafeUrl(f"cannot open {url!r}: the agent opens only http and https URLs")
    return url


def looks_like_password_selector(selector: str) -> bool:
    """True when a selector names a password field by itself (checked before the page)."""
    return looks_secret(selector)


class StepStatus(enum.Enum):
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Aborted by a pause that outlived the grace period; run again on resume.
    INTERRUPTED = "interrupted"


class TaskStatus(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING_FOR_USER = "waiting_for_user"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


@dataclass(frozen=True)
class StepEvent:
    index: int
    action: str
    status: StepStatus
    description: str
    url: str
    duration_ms: int = 0
    error: str = ""
    result: str = ""
    # On the "handback" event: what the person did while they held control.
    handback: HandbackReport | None = None


@dataclass(frozen=True)
class StatusChanged:
    status: TaskStatus
    reason: str
    steps_completed: int


@dataclass(frozen=True)
class UserRequested:
    reason: str
    url: str
    auto_return: AutoReturn | None = None


TaskEvent = StepEvent | StatusChanged | UserRequested
