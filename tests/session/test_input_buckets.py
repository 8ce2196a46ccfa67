"""Unit tests of the per-second input buckets (input_buckets.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.runtime.errors import InvalidArgument
from services.session.input_buckets import (
    MAX_INPUT_BUCKETS,
    InputBucket,
    add_input,
    check_counts,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_reports_in_one_second_add_up_and_a_new_second_starts_a_bucket() -> None:
    buckets = add_input((), T0 + timedelta(milliseconds=100), 2, 5)
    buckets = add_input(buckets, T0 + timedelta(milliseconds=900), 1, 0)
    buckets = add_input(buckets, T0 + timedelta(seconds=3, milliseconds=10), 0, 4)
    assert buckets == (
        InputBucket(T0, 3, 5),
        InputBucket(T0 + timedelta(seconds=3), 0, 4),
    )


def test_a_report_without_counts_adds_no_bucket() -> None:
    assert add_input((), T0, 0, 0) == ()


def test_a_report_older_than_the_newest_bucket_joins_it_keeping_time_order() -> None:
    buckets = add_input((), T0 + timedelta(seconds=5), 1, 0)
    assert add_input(buckets, T0, 2, 1) == (InputBucket(T0 + timedelta(seconds=5), 3, 1),)


def test_the_newest_buckets_are_kept_and_the_oldest_dropped() -> None:
    buckets: tuple[InputBucket, ...] = ()
    for second in range(MAX_INPUT_BUCKETS + 5):
        buckets = add_input(buckets, T0 + timedelta(seconds=second), 1, 0)
    assert len(buckets) == MAX_INPUT_BUCKETS
    assert buckets[0].at == T0 + timedelta(seconds=5)
    assert buckets[-1].at == T0 + timedelta(seconds=MAX_INPUT_BUCKETS + 4)


@pytest.mark.parametrize(("keys", "pointer"), [(-1, 0), (0, -3), (10_001, 0)])
def test_counts_no_edge_sends_are_refused(keys: int, pointer: int) -> None:
    with pytest.raises(InvalidArgument):
        check_counts(keys, pointer)
    check_counts(0, 10_000)
