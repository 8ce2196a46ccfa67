"""BrowserPrewarmer and the display feed with an in-memory launcher: no processes."""

from __future__ import annotations

import asyncio

import pytest

from baton.display.v1 import display_pb2
from services.automation.browser_prewarm import BrowserPrewarmer, SlotView
from services.automation.browser_sessions import BrowserSessions, TaskRequest
from services.automation.display_feed import apply_event, retry_delay, slot_view
from services.automation.settings import AutomationSettings
from services.automation.steps import StatusChanged, TaskStatus
from services.runtime.settings import Env
from tests.automation.fake_browser import FakeLauncher
from tests.conftest import INTERNAL_TOKEN, eventually


def warm(slot_id: str = "a", display: str = ":7", size: tuple[int, int] = (800, 600)) -> SlotView:
    return SlotView(slot_id, display, size[0], size[1], warm_ready=True)


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def prewarmer(launcher: FakeLauncher) -> BrowserPrewarmer:
    return BrowserPrewarmer(launcher)


async def test_a_warm_slot_gets_one_browser_that_a_take_of_its_size_adopts(
    prewarmer: BrowserPrewarmer, launcher: FakeLauncher
) -> None:
    prewarmer.slot_warmed(warm())
    prewarmer.slot_warmed(warm())  # the same slot again (a reconnection): no second launch
    await eventually(lambda: len(prewarmer.ready()) == 1)
    assert [(b.slot_id, b.display) for b in prewarmer.ready()] == [("a", ":7")]
    assert await prewarmer.take(":8", 800, 600) is None
    browser = await prewarmer.take(":7", 800, 600)
    assert browser is launcher.launched[0] and not browser.closed
    assert len(launcher.launched) == 1
    assert prewarmer.ready() == []
    await prewarmer.close()
    assert not launcher.launched[0].closed  # it is the caller's now


async def test_a_take_of_another_size_closes_the_warm_browser(
    prewarmer: BrowserPrewarmer, launcher: FakeLauncher
) -> None:
    prewarmer.slot_warmed(warm())
    await eventually(lambda: len(prewarmer.ready()) == 1)
    assert await prewarmer.take(":7", 1024, 768) is None
    assert launcher.launched[0].closed


async def test_release_failure_and_reconciliation_close_warm_browsers(
    prewarmer: BrowserPrewarmer, launcher: FakeLauncher
) -> None:
    prewarmer.slot_warmed(warm("a", ":7"))
    prewarmer.slot_warmed(warm("b", ":8"))
    prewarmer.slot_warmed(SlotView("c", ":9", 800, 600, warm_ready=False))
    await eventually(lambda: len(prewarmer.ready()) == 2)
    first, second = launcher.launched
    prewarmer.slot_gone("a")
    await eventually(lambda: first.closed)
    # After a reconnection: "b" is gone, "d" is warm.
    prewarmer.reconcile([warm("d", ":10")])
    await eventually(lambda: second.closed and len(prewarmer.ready()) == 1)
    assert [b.slot_id for b in prewarmer.ready()] == ["d"]
    await prewarmer.close()
    assert all(b.closed for b in launcher.launched)


async def test_a_take_waits_for_a_launch_in_flight(
    prewarmer: BrowserPrewarmer, launcher: FakeLauncher
) -> None:
    launcher.hold = asyncio.Event()
    prewarmer.slot_warmed(warm())
    taking = asyncio.ensure_future(prewarmer.take(":7", 800, 600))
    await asyncio.sleep(0.01)
    assert not taking.done()
    launcher.hold.set()
    assert await taking is launcher.launched[0]


async def test_launches_cut_short_leave_nothing(
    prewarmer: BrowserPrewarmer, launcher: FakeLauncher
) -> None:
    launcher.hold = asyncio.Event()
    prewarmer.slot_warmed(warm("a", ":7"))
    prewarmer.slot_warmed(warm("b", ":8"))
    taking = asyncio.ensure_future(prewarmer.take(":7", 800, 600))
    await asyncio.sleep(0.01)
    taking.cancel()  # the StartTask went away mid-launch
    prewarmer.slot_gone("b")  # released mid-launch
    await prewarmer.close()
    launcher.hold.set()
    await asyncio.sleep(0.01)
    assert launcher.launched == []


async def test_a_warm_browser_that_dies_is_cleaned_up_not_handed_out(
    prewarmer: BrowserPrewarmer, launcher: FakeLauncher
) -> None:
    prewarmer.slot_warmed(warm())
    await eventually(lambda: len(prewarmer.ready()) == 1)
    launcher.launched[0].gone.set()
    await eventually(lambda: launcher.launched[0].closed)
    assert prewarmer.ready() == []
    assert await prewarmer.take(":7", 800, 600) is None


async def test_start_task_adopts_and_warm_events_skip_displays_in_use(
    launcher: FakeLauncher,
) -> None:
    sessions: BrowserSessions
    prewarmer = BrowserPrewarmer(launcher, lambda display: sessions.uses_display(display))
    sessions = BrowserSessions(
        AutomationSettings(internal_token=INTERNAL_TOKEN), launcher, None, prewarmer
    )
    prewarmer.slot_warmed(warm())
    await eventually(lambda: len(prewarmer.ready()) == 1)
    request = TaskRequest("s", ":7", 800, 600, "", "http://site/", 5, [])
    events = [event async for _, event in sessions.start_task(request)]
    assert isinstance(events[-1], StatusChanged)
    assert events[-1].status is TaskStatus.COMPLETED
    assert len(launcher.launched) == 1
    # A warm event for the display arriving late puts no second browser there.
    assert sessions.uses_display(":7")
    prewarmer.slot_warmed(warm("late", ":7"))
    assert prewarmer.ready() == []
    await sessions.close_all()
    await prewarmer.close()
    assert len(launcher.launched) == 1


def test_display_slots_and_events_reach_the_prewarmer() -> None:
    slot = display_pb2.Slot(
        id="a",
        display=":7",
        viewport=display_pb2.Viewport(width=800, height=600),
        state=display_pb2.SLOT_STATE_READY,
        warm=True,
    )
    assert slot_view(slot) == warm()
    slot.state = display_pb2.SLOT_STATE_STARTING
    assert not slot_view(slot).warm_ready

    seen: list[tuple[str, object]] = []

    class Recorder(BrowserPrewarmer):
        def slot_warmed(self, slot: SlotView) -> None:
            seen.append(("warmed", slot.slot_id))

        def slot_gone(self, slot_id: str) -> None:
            seen.append(("gone", slot_id))

    recorder = Recorder(FakeLauncher())
    for event in (
        display_pb2.WatchSlotsResponse(warmed=display_pb2.SlotWarmed(slot=slot)),
        display_pb2.WatchSlotsResponse(allocated=display_pb2.SlotAllocated(slot=slot)),
        display_pb2.WatchSlotsResponse(released=display_pb2.SlotReleased(slot=slot)),
        display_pb2.WatchSlotsResponse(failed=display_pb2.SlotFailed(slot=slot)),
    ):
        apply_event(recorder, event)
    assert seen == [("warmed", "a"), ("gone", "a"), ("gone", "a")]
    assert [retry_delay(n) for n in (1, 2, 3, 10)] == [0.2, 0.4, 0.8, 5.0]


def test_display_address_setting() -> None:
    def address(environ: dict[str, str]) -> str | None:
        internal = {"BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value}
        return AutomationSettings.from_env(Env({**internal, **environ})).display_address

    assert address({}) == "127.0.0.1:50052"
    assert address({"BATON_DISPLAY_PORT": "6001"}) == "127.0.0.1:6001"
    assert address({"BATON_DISPLAY_ADDRESS": "10.0.0.5:50052"}) == "10.0.0.5:50052"
    assert address({"BATON_DISPLAY_ADDRESS": "none"}) is None
    assert address({"BATON_DISPLAY_ADDRESS": ""}) is None
    # Built in code (tests, embedding): no pre-warming unless asked for.
    assert AutomationSettings(internal_token=INTERNAL_TOKEN).display_address is None
