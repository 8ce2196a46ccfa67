"""What a slot is: the domain model the pool, the servicer and the tests share."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime

from services.display.settings import Backend
from services.runtime.limits import check_viewport


class SlotState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    RELEASED = "released"


@dataclass(frozen=True)
class Viewport:
    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def checked_viewport(width: int, height: int) -> Viewport:
    """The viewport if a slot can have that size, else InvalidArgument (runtime.limits)."""
    checked = check_viewport(width, height)
    return Viewport(checked.width, checked.height)


@dataclass(frozen=True)
class Slot:
    """A snapshot of one slot; the pool replaces it on every change."""

    id: str
    host_id: str
    state: SlotState
    backend: Backend
    display: int
    viewport: Viewport
    vnc_port: int
    websocket_url: str
    session_id: str
    create_time: datetime
    failure_reason: str = ""
    # True while the slot waits in the warm pool, held by no session.
    warm: bool = False
    # The VNC server's password (never logged: not in repr) and the X
    # display's Xauthority file; both travel only to Baton's own services.
    vnc_password: str = field(default="", repr=False)
    xauthority: str = ""
    # When its recording started (the video's time zero); None: not recorded.
    recording_start_time: datetime | None = None

    @property
    def display_name(self) -> str:
        return f":{self.display}"

    @property
    def vnc_address(self) -> str:
        return f"127.0.0.1:{self.vnc_port}"

    def with_state(self, state: SlotState, failure_reason: str = "") -> Slot:
        return replace(self, state=state, failure_reason=failure_reason or self.failure_reason)


class SlotEventKind(enum.Enum):
    ALLOCATED = "allocated"
    FAILED = "failed"
    RELEASED = "released"
    # A warm slot became ready and waits in the pool.
    WARMED = "warmed"


@dataclass(frozen=True)
class SlotEvent:
    kind: SlotEventKind
    slot: Slot
    reason: str = ""
