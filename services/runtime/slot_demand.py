"""The autoscaling signal for worker hosts: slot demand (deploy/README.md, "Autoscaling").

    demand = live sessions + creates refused for want of a slot recently + headroom
    worker hosts wanted = ceil(demand / slots per host)     (KEDA or the HPA does this)

Live sessions are the slots held on every registered host (draining ones too:
their sessions still run); refused creates are what the fleet lacked, counted by
the edge that answered 429; headroom is warm capacity kept beyond both so a new
session does not wait for a host to start. Pure: the edge feeds it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from services.runtime.worker_registry import WorkerRecord

# How a create refused for want of a free slot on every host begins
# (services/session/placement.py raises it; the edge counts it): one definition.
NO_FREE_SLOT = "no worker host has a free slot"


@dataclass(frozen=True)
class FleetCapacity:
    """The worker hosts' slots as the registry shows them."""

    worker_hosts: int
    draining_hosts: int
    # max slots of the hosts that take sessions (draining ones take none).
    slots_total: int
    # slots held by sessions, on every host.
    slots_held: int
    slots_warm: int
    # False for a host whose capacity nobody publishes (make run's single host).
    capacity_known: bool


def fleet_capacity(records: Iterable[WorkerRecord], unknown_capacity: int) -> FleetCapacity:
    """Sum the records; a record with `max_slots >= unknown_capacity` is a host
    whose capacity is not published (services/session/workers.py, UNKNOWN_CAPACITY)."""
    hosts = draining = total = held = warm = 0
    known = True
    for record in records:
        hosts += 1
        held += record.held
        warm += record.warm_ready
        if record.max_slots >= unknown_capacity:
            known = False
        if record.draining:
            draining += 1
        else:
            total += record.max_slots
    return FleetCapacity(
        worker_hosts=hosts,
        draining_hosts=draining,
        slots_total=total if known else 0,
        slots_held=held,
        slots_warm=warm,
        capacity_known=known,
    )


def slot_demand(live: int, refused_recent: int, headroom: int) -> int:
    """The slots the fleet should have: what runs, what was turned away, and spare."""
    return max(0, live) + max(0, refused_recent) + max(0, headroom)


class RefusalWindow:
    """Creates refused for want of a slot within the last `window_s` seconds.

    Kept in one-second buckets, so a flood of refusals costs at most one entry
    per second of the window. Times are a monotonic clock the caller passes."""

    def __init__(self, window_s: float) -> None:
        if window_s <= 0:
            raise ValueError("the refusal window must be positive")
        self.window_s = window_s
        self._buckets: deque[list[int]] = deque()  # [second, count], oldest first

    def record(self, now: float) -> None:
        second = int(now)
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += 1
        else:
            self._buckets.append([second, 1])
        self._forget(now)

    def count(self, now: float) -> int:
        self._forget(now)
        return sum(count for _, count in self._buckets)

    def _forget(self, now: float) -> None:
        # A bucket lives until its whole second is older than the window.
        while self._buckets and self._buckets[0][0] + 1 <= now - self.window_s:
            self._buckets.popleft()
