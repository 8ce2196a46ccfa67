"""Pure choice of display numbers and VNC ports, and the capacity rule.

Nothing here touches the system: whether another program holds a display or a
port is asked through the predicates the caller passes in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from services.runtime.errors import ResourceExhausted


def first_free(
    candidates: Iterable[int], ours: set[int], held_elsewhere: Callable[[int], bool]
) -> int | None:
    """The first candidate neither we nor another program use, or None."""
    for number in candidates:
        if number not in ours and not held_elsewhere(number):
            return number
    return None


@dataclass(frozen=True)
class Capacity:
    max_slots: int
    # Slots handed to callers, ready or starting.
    held: int
    # Warm slots, ready or starting.
    warm: int
    warm_ready: int

    @property
    def free(self) -> int:
        return max(self.max_slots - self.held, 0)

    def check_can_hold_one_more(self) -> None:
        """Raise ResourceExhausted when every slot of the host is held."""
        if self.held >= self.max_slots:
            raise ResourceExhausted(
                f"display host is full: all {self.max_slots} slots are in use "
                "(BATON_MAX_SLOTS); release a slot or add a worker host"
            )

    def warm_to_start(self, warm_target: int) -> int:
        """How many warm slots to start now: the target, within the host's slots."""
        room = self.max_slots - self.held - self.warm
        return max(min(warm_target - self.warm, room), 0)

    def must_evict_warm(self) -> bool:
        """Whether a fresh slot needs a warm slot stopped to stay within max_slots."""
        return self.held + self.warm >= self.max_slots and self.warm > 0
