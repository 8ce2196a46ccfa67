"""The replay's REST views (services/edge/README.md, "Recording and replay"):
HTTP byte ranges of a recording, and a session's timeline. Pure functions."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from baton.session.v1 import session_pb2
from services.edge.json_views import JsonObject, state_name, step_event_json
from services.runtime.errors import BatonError

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(BatonError):
    code = "OUT_OF_RANGE"
    http_status = 416


@dataclass(frozen=True)
class ByteRange:
    start: int
    # Inclusive, as in Content-Range.
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range a `Range` header asks for (RFC 9110, 14.2), or None for the
    whole file. Several ranges, or another unit, are answered whole (allowed);
    a range past the end is RangeNotSatisfiable."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        # A suffix: the last N bytes.
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(f"the recording has {size} bytes")
        return ByteRange(max(size - suffix, 0), size - 1)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise RangeNotSatisfiable(f"the recording has {size} bytes")
    return ByteRange(start, end)


def _seconds(moment: Timestamp) -> float:
    return moment.seconds + moment.nanos / 1e9


def _iso(moment: Timestamp) -> str:
    return moment.ToJsonString()


def _takeover_gaps(
    session: session_pb2.Session, offset: Callable[[Timestamp], float | None]
) -> list[JsonObject]:
    """Where the video holds its last frame: from each takeover to the change that
    left USER_CONTROL (`toS` None while a person still has control)."""
    gaps: list[JsonObject] = []
    held = False
    for entry in session.timeline:
        person = entry.state == session_pb2.CONTROL_STATE_USER_CONTROL
        if person and not held:
            gaps.append({"fromS": offset(entry.time), "toS": None})
        elif held and not person:
            gaps[-1]["toS"] = offset(entry.time)
        held = person
    return gaps


def timeline_json(session: session_pb2.Session) -> JsonObject:
    """Every kept step event and control change, in time order, each with its
    `offsetS` into the recording (None when not recorded), the person's input
    per second (counts, never keys) and the page's URL over time. `session` is
    a full view (GetSession)."""
    recorded = session.HasField("recording")
    zero = _seconds(session.recording.start_time) if recorded else 0.0

    def offset(moment: Timestamp) -> float | None:
        return round(_seconds(moment) - zero, 3) if recorded else None

    events: list[tuple[float, JsonObject]] = []
    for step in session.steps:
        body: JsonObject = {"kind": "step", "at": _iso(step.time), "offsetS": offset(step.time)}
        body.update(step_event_json(step))
        events.append((_seconds(step.time), body))
    for entry in session.timeline:
        action = session_pb2.ControlAction.Name(entry.action).removeprefix("CONTROL_ACTION_")
        body = {
            "kind": "control",
            "at": _iso(entry.time),
            "offsetS": offset(entry.time),
            "action": action.lower() if entry.action else None,
            "userId": entry.user_id or None,
            "state": state_name(entry.state),
        }
        if entry.reason:
            body["reason"] = entry.reason
        events.append((_seconds(entry.time), body))
    events.sort(key=lambda pair: pair[0])
    gaps = _takeover_gaps(session, offset) if session.recording.paused_during_takeover else []
    urls: list[JsonObject] = []
    for step in session.steps:
        if step.url and (not urls or urls[-1]["url"] != step.url):
            urls.append({"at": _iso(step.time), "offsetS": offset(step.time), "url": step.url})
    return {
        "sessionId": session.id,
        "recording": {
            "hostId": session.recording.host_id,
            "startedAt": _iso(session.recording.start_time),
            "pausedDuringTakeover": session.recording.paused_during_takeover,
            "gaps": gaps,
        }
        if recorded
        else None,
        "events": [body for _, body in events],
        "inputs": [
            {"at": _iso(b.time), "offsetS": offset(b.time), "keys": b.keys, "pointer": b.pointer}
            for b in session.inputs
        ],
        "urls": urls,
    }
