"""The autoscaling signal's arithmetic (services/runtime/slot_demand.py)."""

from __future__ import annotations

import pytest

from services.runtime.slot_demand import RefusalWindow, fleet_capacity, slot_demand
from services.runtime.worker_registry import WorkerRecord
from services.session.workers import UNKNOWN_CAPACITY


def record(host_id: str, max_slots: int, held: int, warm: int, draining: bool) -> WorkerRecord:
    return WorkerRecord(host_id, "e", "d", "a", "s", max_slots, held, warm, draining, 0.0)


def test_demand_is_live_plus_refused_plus_headroom() -> None:
    assert slot_demand(live=5, refused_recent=3, headroom=2) == 10
    assert slot_demand(live=0, refused_recent=0, headroom=0) == 0
    # Nothing negative can lower it (a stale or bad input is not negative demand).
    assert slot_demand(live=-1, refused_recent=-4, headroom=1) == 1


def test_fleet_capacity_counts_draining_hosts_sessions_but_not_their_slots() -> None:
    capacity = fleet_capacity(
        [
            record("a", 8, 3, 1, draining=False),
            record("b", 8, 8, 0, draining=False),
            record("c", 8, 2, 0, draining=True),
        ],
        UNKNOWN_CAPACITY,
    )
    assert capacity.worker_hosts == 3
    assert capacity.draining_hosts == 1
    # The draining host takes nothing new: its slots are not capacity ...
    assert capacity.slots_total == 16
    # ... but its sessions still run, so they are still demand.
    assert capacity.slots_held == 13
    assert capacity.slots_warm == 1
    assert capacity.capacity_known


def test_no_host_is_zero_capacity_and_an_unpublished_host_makes_it_unknown() -> None:
    empty = fleet_capacity([], UNKNOWN_CAPACITY)
    assert (empty.worker_hosts, empty.slots_total, empty.slots_held) == (0, 0, 0)
    assert empty.capacity_known
    static = fleet_capacity([record("one", UNKNOWN_CAPACITY, 0, 0, False)], UNKNOWN_CAPACITY)
    assert not static.capacity_known
    assert static.slots_total == 0


def test_refusals_count_within_the_window_only() -> None:
    window = RefusalWindow(60.0)
    window.record(100.2)
    window.record(100.7)
    window.record(130.0)
    assert window.count(130.5) == 3
    # 100.x leaves once its whole second is older than 60 s.
    assert window.count(160.5) == 3
    assert window.count(161.0) == 1
    assert window.count(190.9) == 1
    assert window.count(191.0) == 0


def test_a_flood_of_refusals_costs_one_bucket_per_second() -> None:
    window = RefusalWindow(10.0)
    for i in range(10_000):
        window.record(5.0 + i / 10_000)
    assert window.count(5.9) == 10_000
    assert len(window._buckets) == 1


def test_the_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RefusalWindow(0)
