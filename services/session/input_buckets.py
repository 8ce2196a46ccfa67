"""The person's input per second, for the replay's timeline (README,
"Recording and replay"): counts of key presses and pointer events, never the
keys. Edges report what a controller's connection forwarded at most once a
second (RecordActivity); each report lands in the bucket of the second it
arrived in. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from services.runtime.errors import InvalidArgument

# Seconds with input kept per session, oldest dropped first: ten minutes of
# typing, and a bounded record (a bucket is ~20 bytes stored).
MAX_INPUT_BUCKETS = 600
# One report counts at most this many events of a kind (an edge reports at
# most once a second; a person does not press 10000 keys in one).
MAX_EVENTS_PER_REPORT = 10_000


@dataclass(frozen=True)
class InputBucket:
    # The whole second the counts were reported in.
    at: datetime
    keys: int
    pointer: int


def check_counts(keys: int, pointer: int) -> None:
    """InvalidArgument for counts no edge sends."""
    for name, count in (("keys", keys), ("pointer", pointer)):
        if not 0 <= count <= MAX_EVENTS_PER_REPORT:
            raise InvalidArgument(f"{name} must be between 0 and {MAX_EVENTS_PER_REPORT}")


def add_input(
    buckets: tuple[InputBucket, ...], now: datetime, keys: int, pointer: int
) -> tuple[InputBucket, ...]:
    """`buckets` with a report of `keys` and `pointer` events at `now` added:
    to the newest bucket when it is this second's (or a later one's, when
    replicas' clocks disagree, so buckets stay in time order), else as a new
    bucket; the newest MAX_INPUT_BUCKETS kept."""
    if not keys and not pointer:
        return buckets
    second = now.replace(microsecond=0)
    if buckets and buckets[-1].at >= second:
        last = buckets[-1]
        merged = replace(last, keys=last.keys + keys, pointer=last.pointer + pointer)
        return (*buckets[:-1], merged)
    return (*buckets, InputBucket(second, keys, pointer))[-MAX_INPUT_BUCKETS:]
