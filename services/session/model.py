"""The session as the session service knows it: plain, immutable values.

Step specifications and step events stay protobuf messages: the session service
stores and forwards them but never looks inside.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from baton.automation.v1 import automation_pb2
from services.session.input_buckets import InputBucket


class ControlState(enum.Enum):
    STARTING = "STARTING"
    AI_CONTROL = "AI_CONTROL"
    USER_CONTROL = "USER_CONTROL"
    PAUSED = "PAUSED"
    # The agent is done (its task completed, failed or was cancelled); the
    # session, its browser and its slot stay for a person to take over, for the
    # settings' finished_idle_s (README, "The control state machine").
    FINISHED = "FINISHED"
    ENDED = "ENDED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self in (ControlState.ENDED, ControlState.FAILED)


class Action(enum.Enum):
    TAKE_CONTROL = "take_control"
    RETURN_CONTROL = "return_control"
    PAUSE = "pause"
    RESUME = "resume"
    END = "end"
    # The person in control (or an operator) gives it to another person.
    HAND_OVER = "hand_over"


class Controller(enum.Enum):
    AI = "ai"
    USER = "user"


class TaskStatus(enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING_FOR_USER = "WAITING_FOR_USER"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def active(self) -> bool:
        """The task still runs (or waits for a person) on its worker host."""
        return self in (TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.WAITING_FOR_USER)


class EventKind(enum.Enum):
    """What the latest change to a session was; WatchSession reports it."""

    CREATED = "created"
    STEP = "step"
    CONTROL_CHANGED = "control_changed"
    TASK_CHANGED = "task_changed"
    ERROR = "error"
    ENDED = "ended"
    # A share was made or revoked: edges close what a revoked share opened.
    SHARES_CHANGED = "shares_changed"
    # A viewer asks the person in control for it (the message names them).
    CONTROL_REQUESTED = "control_requested"
    # Bookkeeping (viewers, activity times) that watchers are not told about.
    BOOKKEEPING = "bookkeeping"


@dataclass(frozen=True)
class Actor:
    user_id: str
    operator: bool = False
    # Set when the caller holds a share's token rather than an account: it
    # reaches that share's session only, while the share lives (shares.py).
    share_id: str = ""
    # The client address the edge saw (the audit trail's); not who the actor is.
    source_address: str = field(default="", compare=False)


class ShareRole(enum.Enum):
    VIEW = "view"
    CONTROL = "control"


@dataclass(frozen=True)
class AutoReturn:
    """When control returns to the agent by itself (docs/state-machine.md,
    "Auto-return"): the page's URL matches, an element appears, or the person
    has sent no input for a while. Empty / 0: that condition is not asked for."""

    url_matches: str = ""
    selector_appears: str = ""
    idle_seconds: float = 0.0


@dataclass(frozen=True)
class Share:
    """Access to one session for someone without an account (README, "Sharing")."""

    id: str
    role: ShareRole
    created_by: str
    created_at: datetime
    expires_at: datetime
    label: str = ""


@dataclass(frozen=True)
class Viewport:
    width: int
    height: int


@dataclass(frozen=True)
class Placement:
    """Where a session runs: a worker host's display slot and services."""

    # The directory's host (workers.py) and its epoch when placed: a host that
    # registers again with another epoch lost every slot it held.
    host_id: str
    slot_id: str
    display: str
    websocket_url: str
    display_address: str
    automation_address: str
    # The slot's VNC password (for the edge, through GetStreamAccess only;
    # never in a Session message, never logged) and its Xauthority file.
    vnc_password: str = field(default="", repr=False)
    xauthority: str = ""
    # Empty in records stored before hosts had epochs: matches any epoch.
    host_epoch: str = ""


@dataclass(frozen=True)
class Recording:
    """A recorded session's video: a file on the worker host that recorded it
    (services/display/README.md, "Recording")."""

    host_id: str
    # The video's time zero.
    started_at: datetime


@dataclass(frozen=True)
class TimelineEntry:
    """One control change for the replay's timeline: what, by whom (empty:
    the agent or Baton itself), when, and the state it led to."""

    at: datetime
    action: Action | None
    user_id: str
    state: ControlState
    reason: str = ""


@dataclass(frozen=True)
class Task:
    text: str
    url: str
    max_steps: int
    steps: tuple[automation_pb2.Step, ...] = ()
    planner: int = automation_pb2.PLANNER_UNSPECIFIED
    status: TaskStatus = TaskStatus.PENDING
    steps_completed: int = 0
    reason: str = ""
    # The seq of the last task event applied (automation numbers them from 1):
    # a follower attaching again reads on after it, and an event at or below it
    # is one already applied (task_runs.py).
    events_applied: int = 0


@dataclass(frozen=True)
class LastEvent:
    kind: EventKind
    action: Action | None = None
    step: automation_pb2.StepEvent | None = None
    message: str = ""


@dataclass(frozen=True)
class Session:
    id: str
    owner_user_id: str
    task: Task
    viewport: Viewport
    created_at: datetime
    updated_at: datetime
    last_activity_at: datetime
    state: ControlState = ControlState.STARTING
    controller: Controller | None = None
    controller_user_id: str = ""
    # Bumped by every change a client can see (not by bookkeeping).
    version: int = 1
    # The version at which control (state, controller) last changed: what a
    # client's expected_version is checked against (state_machine.check_version),
    # so the agent's step reports never make a person's take_control stale.
    control_version: int = 0
    # How many step events the session has had. The events themselves are an
    # append-only log beside the record (store.py), step n at seq n: a record
    # stays small however long the task runs.
    step_count: int = 0
    ended_reason: str = ""
    placement: Placement | None = None
    user_request_reason: str = ""
    viewer_count: int = 0
    # When a viewer was last reported joined or present; the count lapses
    # after the settings' viewer lease without such a report.
    viewers_seen_at: datetime | None = None
    shares: tuple[Share, ...] = ()
    last_event: LastEvent = field(default_factory=lambda: LastEvent(EventKind.CREATED))
    # Whether the session is to be recorded, and its recording once it started.
    record: bool = False
    recording: Recording | None = None
    # The video holds its last frame while a person has control (handoff.py).
    pause_recording_during_takeover: bool = False
    # Control changes, oldest first; the newest MAX_TIMELINE_ENTRIES kept.
    timeline: tuple[TimelineEntry, ...] = ()
    # What the person did the last time one returned control (automation's
    # TakeHandback, stamped by handoff.py); None before.
    handback: automation_pb2.Handback | None = None
    # The auto-return conditions of the takeover in progress (auto_return.py).
    auto_return: AutoReturn | None = None
    # Those a request_user step set for the takeover it asks for.
    user_request_auto_return: AutoReturn | None = None
    # When a person's input last reached the browser (the edges report it).
    last_input_at: datetime | None = None
    # How much input reached it, per second (input_buckets.py): counts only.
    inputs: tuple[InputBucket, ...] = ()


@dataclass(frozen=True)
class FullSession:
    """A session with the step events its log keeps (the newest, oldest first),
    read together with the record: GetSession's view."""

    session: Session
    steps: tuple[automation_pb2.StepEvent, ...] = ()
