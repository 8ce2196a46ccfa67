"""Bounds on everything a caller can make Baton store, in one place.

The edge checks a REST or Socket.IO body against these before it calls the
session service, and the session service checks every CreateSession against
the same values, so a gRPC caller cannot store more than a REST caller and
one session (and so one page of ListSessions) stays far below gRPC's 4 MiB
message limit. Sizes are UTF-8 bytes, since that is what is stored.
See the top README's "Limits" section.
"""

from __future__ import annotations

from dataclasses import dataclass

from baton.automation.v1 import automation_pb2
from baton.session.v1 import session_pb2
from services.runtime.errors import InvalidArgument


@dataclass(frozen=True)
class Viewport:
    width: int
    height: int


# What a display slot can be (Xvnc/Xvfb geometry Chromium is laid out in).
MIN_VIEWPORT = Viewport(640, 480)
MAX_VIEWPORT = Viewport(3840, 2160)

MAX_TASK_BYTES = 4 * 1024
MAX_URL_BYTES = 2 * 1024
# Explicit steps of one session, and maxSteps (how many the agent may take).
MAX_STEPS = 1000
MAX_MAX_STEPS = 1000
# Each string field of a step (selector, value, text, key, url, reason), and
# all the steps together (their protobuf encoding).
MAX_STEP_FIELD_BYTES = 2 * 1024
MAX_STEPS_BYTES = 64 * 1024
MAX_USER_ID_BYTES = 256
# Shares of one session (services/session/shares.py): live at once, their
# longest life (a share ends with its session anyway), and a label's size.
MAX_SHARES = 20
MAX_SHARE_TTL_S = 24 * 3600.0
MAX_SHARE_LABEL_BYTES = 128
MAX_SHARE_ID_BYTES = 64
MAX_REASON_BYTES = 512

# Text the session service stores from automation (step events, task status):
# longer text is cut, never refused, so a page cannot fail a task this way.
MAX_EVENT_TEXT_BYTES = 1024
# Step events kept per session; older ones drop off (the count stays).
MAX_STEP_EVENTS_KEPT = 200

# ListSessions: page_size when the caller gives none, and the most it may ask for.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
# A page also stops before its sessions pass this many bytes, well under the
# 4 MiB gRPC message limit. A page holds summaries (no steps), a maximal one
# about 4.3 KiB; a maximal full session (GetSession) is about 1.1 MiB.
MAX_PAGE_BYTES = 3 * 1024 * 1024


def check_text(value: str, field: str, limit: int) -> str:
    """`value` if it is at most `limit` UTF-8 bytes, else InvalidArgument naming both."""
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise InvalidArgument(f"{field} is {size} bytes; the limit is {limit} bytes")
    return value


def truncate_text(value: str, limit: int = MAX_EVENT_TEXT_BYTES) -> str:
    """`value` cut to at most `limit` UTF-8 bytes (on a character boundary)."""
    raw = value.encode()
    if len(raw) <= limit:
        return value
    return raw[: limit - 3].decode(errors="ignore") + "…"


def check_viewport(width: int, height: int, field: str = "viewport") -> Viewport:
    if not (
        MIN_VIEWPORT.width <= width <= MAX_VIEWPORT.width
        and MIN_VIEWPORT.height <= height <= MAX_VIEWPORT.height
    ):
        raise InvalidArgument(
            f"{field} {width}x{height} is out of range: width must be "
            f"{MIN_VIEWPORT.width}..{MAX_VIEWPORT.width} and height "
            f"{MIN_VIEWPORT.height}..{MAX_VIEWPORT.height}"
        )
    return Viewport(width, height)


def check_step(step: automation_pb2.Step, field: str) -> None:
    """Every string field of one step within MAX_STEP_FIELD_BYTES."""
    action = step.WhichOneof("action")
    if action is None:
        raise InvalidArgument(f"{field} has no action")
    message = getattr(step, action)
    for descriptor, value in message.ListFields():
        if isinstance(value, str):
            check_text(value, f"{field}.{descriptor.name}", MAX_STEP_FIELD_BYTES)


def check_create_request(request: session_pb2.CreateSessionRequest) -> None:
    """CreateSession's bounds; field names as in the gRPC request."""
    check_text(request.task, "task", MAX_TASK_BYTES)
    check_text(request.url, "url", MAX_URL_BYTES)
    if not 0 <= request.max_steps <= MAX_MAX_STEPS:
        raise InvalidArgument(f"max_steps must be between 0 and {MAX_MAX_STEPS}")
    if len(request.steps) > MAX_STEPS:
        raise InvalidArgument(f"steps has {len(request.steps)} steps; the limit is {MAX_STEPS}")
    for index, step in enumerate(request.steps):
        check_step(step, f"steps[{index}]")
    size = sum(step.ByteSize() for step in request.steps)
    if size > MAX_STEPS_BYTES:
        raise InvalidArgument(f"steps are {size} bytes; the limit is {MAX_STEPS_BYTES} bytes")
    if request.HasField("viewport"):
        check_viewport(request.viewport.width, request.viewport.height)


# Control changes a session's timeline keeps (the newest); a takeover is two.
MAX_TIMELINE_ENTRIES = 1000
