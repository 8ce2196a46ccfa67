"""Unit tests of a viewer connection's input counting (input_tally.py)."""

from __future__ import annotations

from services.edge.input_tally import InputCounts, InputTally


def test_the_first_input_is_reported_at_once_and_later_input_rides_the_next_report() -> None:
    tally = InputTally(1.0)
    assert tally.add(10.0, 1, 0) == 0.0
    assert tally.take(10.0) == InputCounts(1, 0)
    # Within the interval: one report due at its end, the counts adding up.
    assert tally.add(10.25, 2, 3) == 0.75
    assert tally.add(10.5, 1, 1) is None
    assert tally.take(11.0) == InputCounts(3, 4)
    assert tally.take(11.5) is None
    # After the interval: at once again.
    assert tally.add(12.5, 0, 1) == 0.0
    assert tally.take(12.5) == InputCounts(0, 1)
