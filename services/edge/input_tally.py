"""One viewer connection's forwarded input, counted for the session service
(RecordActivity): reported at most once per interval, the counts since the
last report riding with it, so the per-second buckets of the replay's timeline
(services/session/input_buckets.py) lose nothing. Counts only, never keys.
Pure: the caller owns the clock and the timer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InputCounts:
    keys: int
    pointer: int


class InputTally:
    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._last_report: float | None = None
        self._keys = 0
        self._pointer = 0
        self._due = False

    def add(self, now: float, keys: int, pointer: int) -> float | None:
        """Count input forwarded at `now` (monotonic seconds). Returns in how
        many seconds to report (0: now), or None when a report is already due."""
        self._keys += keys
        self._pointer += pointer
        if self._due:
            return None
        self._due = True
        if self._last_report is None:
            return 0.0
        return max(0.0, self._last_report + self._interval_s - now)

    def take(self, now: float) -> InputCounts | None:
        """The counts to report at `now`, reset; None when nothing is due."""
        if not self._due:
            return None
        counts = InputCounts(self._keys, self._pointer)
        self._keys = self._pointer = 0
        self._due = False
        self._last_report = now
        return counts
