"""Why a session failed, in words a person reads (`endedReason`).

Details (an X server's log tail, a gRPC status) go to the session service's
log, never into the session: they mean nothing to the person watching and may
hold paths or internals. `stranded` decides which live sessions lost their
display slot or browser on the worker host; it is pure so it is unit-tested.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.session.model import ControlState, Session

DISPLAY_CRASHED = "the display crashed"
BROWSER_CRASHED = "the browser crashed"
AUTOMATION_CRASHED = "the automation service crashed"
AUTOMATION_FAILED = "the automation failed unexpectedly"
# The worker host's registration ended (its lease expired, or it restarted with
# a new epoch): its displays and browsers are gone with it (issue 10).
HOST_LOST = "worker host lost"
# A task no replica could follow again (AttachTask found none: automation
# restarted, or never got the StartTask); the browser stays for the person.
TASK_INTERRUPTED = "the task was interrupted and could not be followed again"


@dataclass(frozen=True)
class WorkerView:
    """What the worker host has: slot id -> session id, and sessions with a browser."""

    slots: Mapping[str, str]
    browsers: frozenset[str]


def stranded(
    sessions: Iterable[Session], worker: WorkerView, starting: frozenset[str]
) -> dict[str, str]:
    """Live, placed sessions whose slot or browser is gone: session id -> reason.

    `starting` are sessions whose browser this service is still asking for.
    """
    found = {}
    for session in sessions:
        placement = session.placement
        if session.state.terminal or session.state is ControlState.STARTING or placement is None:
            continue
        if worker.slots.get(placement.slot_id) != session.id:
            found[session.id] = DISPLAY_CRASHED
        elif session.id not in worker.browsers and session.id not in starting:
            found[session.id] = BROWSER_CRASHED
    return found
