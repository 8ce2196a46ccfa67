"""SlotPool with an in-memory launcher: capacity, warm pool, failures, events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from services.display.process_stack import SlotSpec, SlotStartError
from services.display.settings import DisplaySettings, NumberRange
from services.display.slot import SlotEventKind, SlotState, Viewport
from services.display.slot_pool import SlotPool
from services.runtime.errors import FailedPrecondition, NotFound, ResourceExhausted, Unavailable
from tests.conftest import INTERNAL_TOKEN


class FakeSlot:
    def __init__(self, spec: SlotSpec) -> None:
        self.spec = spec
        self.stopped = False
        self.recording_to: Path | None = None
        self._exited = asyncio.Event()
        self._reason = ""

    @property
    def websocket_url(self) -> str:
        return f"ws://127.0.0.1:6080/websockify?token={self.spec.token}"

    @property
    def xauthority(self) -> str:
        return f"/state/slots/{self.spec.slot_id}/Xauthority"

    async def wait_exit(self) -> str:
        await self._exited.wait()
        return self._reason

    async def stop(self) -> None:
        self.stopped = True

    async def start_recording(self, output: Path) -> None:
        self.recording_to = output

    def pause_recording(self, paused: bool) -> bool:
        return False

    def die(self, reason: str) -> None:
        self._reason = reason
        self._exited.set()


class FakeLauncher:
    def __init__(self) -> None:
        self.launched: list[FakeSlot] = []
        self.failures_left = 0
        self.always_fail = False

    async def launch(self, spec: SlotSpec) -> FakeSlot:
        await asyncio.sleep(0)
        if self.always_fail or self.failures_left:
            self.failures_left = max(self.failures_left - 1, 0)
            raise SlotStartError(f"display :{spec.display} is taken")
        slot = FakeSlot(spec)
        self.launched.append(slot)
        return slot

    def by_id(self, slot_id: str) -> FakeSlot:
        return next(s for s in self.launched if s.spec.slot_id == slot_id)


def make_pool(
    launcher: FakeLauncher,
    max_slots: int = 3,
    warm_slots: int = 0,
    display_held: Callable[[int], bool] = lambda n: False,
    refill_delay_s: float = 0.0,
) -> SlotPool:
    settings = DisplaySettings(
        internal_token=INTERNAL_TOKEN,
        max_slots=max_slots,
        warm_slots=warm_slots,
        warm_refill_delay_s=refill_delay_s,
        displays=NumberRange(10, 19),
        vnc_ports=NumberRange(5910, 5919),
        state_dir=Path("/nonexistent"),
    )
    return SlotPool(settings, launcher, display_held=display_held, port_held=lambda p: False)


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
async def pool(launcher: FakeLauncher) -> AsyncIterator[SlotPool]:
    pool = make_pool(launcher)
    pool.start()
    yield pool
    await pool.close()


async def until(condition: Callable[[], bool]) -> None:
    """Let the pool's background tasks run until `condition` holds."""
    while True:
        if condition():
            return
        await asyncio.sleep(0.001)


async def test_allocation_starts_a_slot_of_the_asked_size(pool: SlotPool) -> None:
    slot, from_warm = await pool.allocate(Viewport(800, 600), "session-1")
    assert not from_warm
    assert slot.state is SlotState.READY
    assert (slot.viewport, slot.session_id, slot.display) == (Viewport(800, 600), "session-1", 10)
    assert slot.websocket_url.startswith("ws://127.0.0.1:")
    assert pool.get(slot.id) == slot
    assert pool.capacity().held == 1


async def test_no_viewport_means_the_default_size(pool: SlotPool) -> None:
    slot, _ = await pool.allocate(None, "s")
    assert slot.viewport == Viewport(1280, 720)


async def test_beyond_max_slots_is_refused_until_a_release(pool: SlotPool) -> None:
    slots = [(await pool.allocate(None, f"s{i}"))[0] for i in range(3)]
    with pytest.raises(ResourceExhausted, match="all 3 slots are in use"):
        await pool.allocate(None, "one-too-many")
    await pool.release(slots[0].id)
    slot, _ = await pool.allocate(None, "after-release")
    assert slot.state is SlotState.READY


async def test_displays_held_by_other_programs_are_skipped(launcher: FakeLauncher) -> None:
    pool = make_pool(launcher, display_held=lambda n: n in (10, 11))
    try:
        slot, _ = await pool.allocate(None, "s")
        assert slot.display == 12
    finally:
        await pool.close()


async def test_a_failed_launch_is_retried_on_another_display(
    pool: SlotPool, launcher: FakeLauncher
) -> None:
    launcher.failures_left = 1
    slot, _ = await pool.allocate(None, "s")
    assert slot.display == 11
    assert slot.vnc_port == 5911


async def test_a_slot_that_never_starts_is_unavailable_and_not_held(
    pool: SlotPool, launcher: FakeLauncher
) -> None:
    launcher.always_fail = True
    with pytest.raises(Unavailable, match="did not start"):
        await pool.allocate(None, "s")
    assert pool.capacity().held == 0
    assert pool.list() == []


async def test_a_dying_slot_is_failed_announced_and_stopped(
    pool: SlotPool, launcher: FakeLauncher
) -> None:
    subscription = pool.events.subscribe()
    slot, _ = await pool.allocate(None, "s")
    allocated = await anext(subscription)
    assert (allocated.kind, allocated.slot.id) == (SlotEventKind.ALLOCATED, slot.id)

    launcher.by_id(slot.id).die("Xvnc exited with status -9")
    failed = await anext(subscription)

    assert failed.kind is SlotEventKind.FAILED
    assert failed.reason == "Xvnc exited with status -9"
    assert failed.slot.state is SlotState.FAILED
    await until(lambda: launcher.by_id(slot.id).stopped)
    assert pool.get(slot.id).state is SlotState.FAILED
    assert pool.capacity().held == 0
    await pool.release(slot.id)
    with pytest.raises(NotFound):
        pool.get(slot.id)
    subscription.close()


async def test_release_stops_the_slot_and_announces_it(
    pool: SlotPool, launcher: FakeLauncher
) -> None:
    slot, _ = await pool.allocate(None, "s")
    subscription = pool.events.subscribe()
    await pool.release(slot.id)
    released = await anext(subscription)
    assert (released.kind, released.slot.state) == (SlotEventKind.RELEASED, SlotState.RELEASED)
    assert launcher.by_id(slot.id).stopped
    with pytest.raises(NotFound):
        await pool.release(slot.id)
    subscription.close()


async def test_warm_pool_hands_out_ready_slots_and_refills(launcher: FakeLauncher) -> None:
    pool = make_pool(launcher, max_slots=4, warm_slots=2)
    pool.start()
    try:
        await until(lambda: pool.capacity().warm_ready == 2)
        slot, from_warm = await pool.allocate(None, "s")
        assert from_warm
        assert slot.session_id == "s"
        await until(lambda: pool.capacity().warm_ready == 2)
        assert len(launcher.launched) == 3
        odd, from_warm = await pool.allocate(Viewport(1024, 768), "odd")
        assert not from_warm
        assert odd.viewport == Viewport(1024, 768)
        # Warm slots are not handed to callers in ListSlots as held ones.
        assert {s.session_id for s in pool.list(include_warm=False)} == {"s", "odd"}
    finally:
        await pool.close()
    assert all(s.stopped for s in launcher.launched)


async def test_a_claimed_warm_slot_is_replaced_after_the_refill_delay(
    launcher: FakeLauncher,
) -> None:
    pool = make_pool(launcher, max_slots=4, warm_slots=2, refill_delay_s=0.4)
    pool.start()
    try:
        await until(lambda: pool.capacity().warm_ready == 2)
        loop = asyncio.get_running_loop()
        claimed_at = loop.time()
        _, from_warm = await pool.allocate(None, "s")
        assert from_warm
        # Nothing starts while the claiming session starts...
        await asyncio.sleep(0.3)
        assert (pool.capacity().warm, len(launcher.launched)) == (1, 2)
        # ...and a second claim does not put the refill off further...
        _, from_warm = await pool.allocate(None, "t")
        assert from_warm and pool.capacity().warm == 0
        # ...so the pool is whole again from the first claim's delay on (put off
        # by the second, it would take 0.7 s).
        await until(lambda: pool.capacity().warm_ready == 2)
        assert 0.4 <= loop.time() - claimed_at < 0.65
        assert len(launcher.launched) == 4
    finally:
        await pool.close()


async def test_warm_slots_give_way_to_held_ones(launcher: FakeLauncher) -> None:
    pool = make_pool(launcher, max_slots=2, warm_slots=2)
    pool.start()
    try:
        await until(lambda: pool.capacity().warm_ready == 2)
        await pool.allocate(Viewport(800, 600), "a")
        await pool.allocate(Viewport(800, 600), "b")
        capacity = pool.capacity()
        assert (capacity.held, capacity.warm) == (2, 0)
        with pytest.raises(ResourceExhausted):
            await pool.allocate(None, "c")
    finally:
        await pool.close()


async def test_close_stops_every_slot(launcher: FakeLauncher) -> None:
    pool = make_pool(launcher, warm_slots=1)
    pool.start()
    await pool.allocate(Viewport(800, 600), "a")
    await until(lambda: pool.capacity().warm_ready == 1)
    await pool.close()
    assert len(launcher.launched) == 2
    assert all(s.stopped for s in launcher.launched)
    with pytest.raises(Unavailable):
        await pool.allocate(None, "late")


async def test_warm_slots_are_announced_flagged_and_let_go(launcher: FakeLauncher) -> None:
    pool = make_pool(launcher, max_slots=1, warm_slots=1)
    subscription = pool.events.subscribe()
    pool.start()
    try:
        warmed = await anext(subscription)
        assert warmed.kind is SlotEventKind.WARMED
        assert (warmed.slot.warm, warmed.slot.state) == (True, SlotState.READY)
        assert [(s.id, s.warm) for s in pool.list()] == [(warmed.slot.id, True)]

        slot, from_warm = await pool.allocate(None, "s")
        assert from_warm and slot.id == warmed.slot.id and not slot.warm
        allocated = await anext(subscription)
        assert (allocated.kind, allocated.slot.warm) == (SlotEventKind.ALLOCATED, False)
        await pool.release(slot.id)
        assert (await anext(subscription)).kind is SlotEventKind.RELEASED

        # A slot of another size takes the only place: the warm one is given up.
        rewarmed = await anext(subscription)
        assert rewarmed.kind is SlotEventKind.WARMED
        await pool.allocate(Viewport(800, 600), "odd")
        evicted = await anext(subscription)
        assert (evicted.kind, evicted.slot.id) == (SlotEventKind.RELEASED, rewarmed.slot.id)
        assert (await anext(subscription)).kind is SlotEventKind.ALLOCATED
    finally:
        subscription.close()
        await pool.close()


async def test_a_draining_pool_refuses_new_slots_and_waits_for_the_held_ones(
    launcher: FakeLauncher,
) -> None:
    pool = make_pool(launcher, max_slots=3, warm_slots=1)
    pool.start()
    try:
        held, _ = await pool.allocate(Viewport(800, 600), "held")
        await until(lambda: pool.capacity().warm_ready == 1)
        warm = next(s for s in launcher.launched if s.spec.slot_id != held.id)
        pool.drain()
        with pytest.raises(FailedPrecondition, match="host localhost is draining"):
            await pool.allocate(None, "late")
        # Nobody may claim the warm slot any more: it stops, and is not refilled.
        await until(lambda: warm.stopped)
        assert pool.capacity().warm == 0
        idle = asyncio.create_task(pool.wait_until_idle())
        await asyncio.sleep(0.01)
        assert not idle.done()
        await pool.release(held.id)
        await asyncio.wait_for(idle, 1)
        assert len(launcher.launched) == 2
    finally:
        await pool.close()
