"""The replay's pure views: byte ranges and the timeline."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from baton.automation.v1 import automation_pb2
from baton.session.v1 import session_pb2
from services.edge.recording_views import (
    ByteRange,
    RangeNotSatisfiable,
    parse_range,
    timeline_json,
)
from services.runtime.errors import InvalidArgument
from services.session.settings import RecordPolicy


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=100-", ByteRange(100, 999)),
        ("bytes=-10", ByteRange(990, 999)),
        ("bytes=-5000", ByteRange(0, 999)),
        ("bytes=900-5000", ByteRange(900, 999)),
        # Several ranges or another unit: the whole file (RFC 9110 allows it).
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
    ],
)
def test_a_range_header_is_one_range_within_the_file(
    header: str | None, expected: ByteRange | None
) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-2", "bytes=-0"])
def test_a_range_outside_the_file_is_not_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)


def _at(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def test_the_timeline_places_steps_and_control_changes_in_the_video() -> None:
    session = session_pb2.Session(
        id="s",
        recording=session_pb2.Recording(host_id="h", start_time=_at(100)),
        steps=[
            automation_pb2.StepEvent(index=0, action="goto", url="http://a/", time=_at(101)),
            automation_pb2.StepEvent(index=1, action="click", url="http://b/", time=_at(104)),
        ],
        timeline=[
            session_pb2.TimelineEntry(
                time=_at(102.5),
                action=session_pb2.CONTROL_ACTION_TAKE_CONTROL,
                user_id="alice",
                state=session_pb2.CONTROL_STATE_USER_CONTROL,
            )
        ],
    )
    body = timeline_json(session)
    events = body["events"]
    assert [(e["kind"], e["offsetS"]) for e in events] == [
        ("step", 1.0),
        ("control", 2.5),
        ("step", 4.0),
    ]
    assert events[1]["action"] == "take_control" and events[1]["userId"] == "alice"
    assert [u["url"] for u in body["urls"]] == ["http://a/", "http://b/"]


def test_the_timeline_places_the_input_per_second_in_the_video() -> None:
    session = session_pb2.Session(
        id="s",
        recording=session_pb2.Recording(host_id="h", start_time=_at(100)),
        inputs=[session_pb2.InputBucket(time=_at(103), keys=4, pointer=9)],
    )
    assert timeline_json(session)["inputs"] == [
        {"at": "1970-01-01T00:01:43Z", "offsetS": 3.0, "keys": 4, "pointer": 9}
    ]


def test_the_record_policy_decides_and_never_refuses_asking() -> None:
    assert RecordPolicy.ON_REQUEST.records(True) and not RecordPolicy.ON_REQUEST.records(False)
    assert RecordPolicy.ALWAYS.records(False)
    assert not RecordPolicy.NEVER.records(False)
    with pytest.raises(InvalidArgument, match="BATON_RECORD=never"):
        RecordPolicy.NEVER.records(True)
