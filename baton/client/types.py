"""The shapes of the edge's answers and events, as typed dictionaries.

Each mirrors a schema of docs/openapi.json (`components/schemas`) or a message of
docs/asyncapi.yaml field for field, camelCase as on the wire: the client returns
the JSON the edge sent, typed, so nothing the edge adds later is lost.
tests/client/test_types.py checks the fields against both documents.
"""

# No `from __future__ import annotations`: TypedDict reads NotRequired from the
# evaluated annotations (__required_keys__ would count every key as required).
from typing import Any, Literal, NotRequired, TypedDict

State = Literal["STARTING", "AI_CONTROL", "USER_CONTROL", "PAUSED", "FINISHED", "ENDED", "FAILED"]
TaskStatus = Literal["PENDING", "RUNNING", "WAITING_FOR_USER", "COMPLETED", "FAILED", "CANCELLED"]
ControlAction = Literal["take_control", "return_control", "pause", "resume", "end", "hand_over"]
ShareRole = Literal["view", "control"]
Agent = Literal["builtin", "external"]


class Viewport(TypedDict):
    width: int
    height: int


class Task(TypedDict, total=False):
    text: str
    url: str
    maxSteps: int
    status: TaskStatus
    stepsCompleted: int
    reason: str


class StepEvent(TypedDict):
    """One step of a session's task (schema StepEvent)."""

    index: int
    action: str
    status: Literal["started", "succeeded", "failed", "interrupted"]
    description: str
    url: str
    durationMs: int
    error: NotRequired[str]
    result: NotRequired[str]
    handback: NotRequired[dict[str, Any]]


class AutoReturn(TypedDict, total=False):
    """When control returns to the agent by itself (take_control's autoReturn)."""

    urlMatches: str | None
    selectorAppears: str | None
    idleSeconds: float | None


class RecordingStart(TypedDict, total=False):
    """Present on a recorded session: the video's time zero."""

    startedAt: str | None


class SessionSummary(TypedDict):
    """A session without its step events (schema SessionSummary)."""

    id: str
    state: State
    controller: Literal["ai", "user"] | None
    controllerUserId: str | None
    version: int
    task: Task
    stepCount: int
    createdAt: str | None
    updatedAt: str | None
    ownerUserId: NotRequired[str]
    endedReason: NotRequired[str]
    userRequestReason: NotRequired[str]
    viewport: NotRequired[Viewport]
    recording: NotRequired[RecordingStart]
    # What the person did the last time control was returned (schema Handback).
    handback: NotRequired[dict[str, Any]]
    autoReturn: NotRequired[AutoReturn]


class Session(SessionSummary):
    """A session with its newest step events (schema Session)."""

    steps: list[StepEvent]


class SessionPage(TypedDict):
    """One page of GET /api/browser-session; nextPageToken is None on the last."""

    sessions: list[SessionSummary]
    nextPageToken: str | None


class Stream(TypedDict):
    """Where a VNC viewer (noVNC) connects (schema Stream)."""

    url: str
    viewOnly: bool
    expiresAt: str


class Cdp(TypedDict):
    """Where a CDP client (Playwright, Puppeteer) connects (schema Cdp)."""

    url: str
    expiresAt: str


class Share(TypedDict):
    """A share of one session for someone without an account (schema Share)."""

    id: str
    role: ShareRole
    label: str
    createdBy: str
    createdAt: str
    expiresAt: str


class ShareCreated(Share):
    """A new share with its page's URL and its bearer token (schema ShareCreated)."""

    url: str
    token: str


class Timeline(TypedDict):
    """A session's steps and control changes placed in its video (schema Timeline)."""

    sessionId: str
    recording: dict[str, Any] | None
    events: list[dict[str, Any]]
    inputs: list[dict[str, Any]]
    urls: list[dict[str, Any]]


class HandOver(TypedDict, total=False):
    onPasswordField: bool | None


# An explicit step, such as {"action": "goto", "url": "https://example.com"}:
# docs/steps.md lists every action and its fields.
Step = dict[str, object]


class ErrorDetail(TypedDict):
    code: str
    message: str


class EventData(TypedDict, total=False):
    """The payload of a Socket.IO event from the edge (docs/asyncapi.yaml): which
    fields it has depends on the event."""

    session: SessionSummary
    step: StepEvent
    action: ControlAction | None
    message: str
    reason: str
    error: ErrorDetail
    userId: str
    handback: dict[str, Any] | None
