"""XInputDrain against twins of the page and the X pointer: the marker's path and bounds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from services.automation.input_drain import (
    DrainFailed,
    Point,
    Viewport,
    drain_x_input,
    location_argv,
    move_argv,
    parse_location,
    plan_marker,
    x_env,
)

VIEWPORT = Viewport(left=0, top=80, width=1280, height=640)


@dataclass
class TwinScreen:
    """An X pointer and a page: moves over the viewport reach the page after `lag_s`."""

    pointer: Point = field(default_factory=lambda: Point(640, 360))
    lag_s: float = 0.0
    # The page navigates away mid-drain: its listener is gone.
    navigating: bool = False
    page_moves: list[Point] = field(default_factory=list)
    armed: bool = False
    disarmed: bool = False
    pending: set[asyncio.Task[None]] = field(default_factory=set)

    # XPointer
    async def location(self) -> Point:
        return self.pointer

    async def move(self, path: list[tuple[int, int]]) -> None:
        for dx, dy in path:
            self.pointer = Point(self.pointer.x + dx, self.pointer.y + dy)
            if VIEWPORT.contains(self.pointer):
                task = asyncio.ensure_future(self._deliver(self.pointer))
                self.pending.add(task)

    async def _deliver(self, at: Point) -> None:
        await asyncio.sleep(self.lag_s)
        self.page_moves.append(at)

    # MarkerPage
    async def arm(self) -> Viewport:
        self.armed = True
        return VIEWPORT

    async def wait_for_pointer(self, at: Point, timeout_s: float) -> bool:
        if self.navigating:
            raise DrainFailed("Execution context was destroyed")
        deadline = asyncio.get_running_loop().time() + timeout_s
        while at not in self.page_moves:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def disarm(self) -> None:
        self.disarmed = True


async def test_the_drain_ends_when_the_page_sees_the_marker_and_puts_the_pointer_back() -> None:
    screen = TwinScreen(lag_s=0.05)
    outcome = await drain_x_input(screen, screen, timeout_s=1)
    assert outcome.drained, outcome
    # It waited for the page (the lag), not for its bound.
    assert 50 <= outcome.elapsed_ms < 500
    assert Point(641, 360) in screen.page_moves
    assert screen.pointer == Point(640, 360)
    assert screen.armed and screen.disarmed


async def test_a_page_that_never_sees_the_marker_costs_the_bound_then_the_agent_goes_on() -> None:
    screen = TwinScreen(lag_s=5)
    outcome = await drain_x_input(screen, screen, timeout_s=0.2)
    assert not outcome.drained
    assert 200 <= outcome.elapsed_ms < 1000
    assert screen.disarmed
    for task in screen.pending:
        task.cancel()


async def test_a_navigation_mid_drain_ends_it_with_a_reason() -> None:
    screen = TwinScreen(navigating=True)
    outcome = await drain_x_input(screen, screen, timeout_s=1)
    assert not outcome.drained
    assert "destroyed" in outcome.reason
    assert screen.pointer == Point(640, 360) or screen.disarmed


async def test_a_pointer_over_the_toolbar_enters_the_page_and_comes_back() -> None:
    screen = TwinScreen(pointer=Point(300, 20))
    outcome = await drain_x_input(screen, screen, timeout_s=1)
    assert outcome.drained, outcome
    assert screen.page_moves[-1] == Point(2, 80 + 640 - 2)
    assert screen.pointer == Point(300, 20)


def test_the_marker_is_one_pixel_inside_the_page() -> None:
    plan = plan_marker(Point(640, 360), VIEWPORT)
    assert (plan.enter, plan.nudge, plan.marker) == (None, (1, 0), Point(641, 360))
    # At the right edge it goes left.
    plan = plan_marker(Point(1279, 100), VIEWPORT)
    assert (plan.nudge, plan.marker) == ((-1, 0), Point(1278, 100))
    # Over the browser's toolbar it enters at the bottom-left corner first.
    plan = plan_marker(Point(500, 40), VIEWPORT)
    assert plan.enter == Point(1, 718)
    assert plan.marker == Point(2, 718)
    assert VIEWPORT.contains(plan.marker)


def test_xdotool_argv_and_output() -> None:
    assert location_argv() == ["xdotool", "getmouselocation", "--shell"]
    assert move_argv([(1, 0), (-1, 0)]) == [
        "xdotool",
        "mousemove_relative",
        "--",
        "1",
        "0",
        "mousemove_relative",
        "--",
        "-1",
        "0",
    ]
    assert parse_location("X=640\nY=360\nSCREEN=0\nWINDOW=1305\n") == Point(640, 360)
    try:
        parse_location("Error: Can't open display")
    except DrainFailed as error:
        assert "no pointer location" in str(error)
    else:
        raise AssertionError("a garbled answer must fail")


def test_xdotool_gets_the_display_and_its_cookie_and_nothing_of_baton() -> None:
    env = x_env(
        {"PATH": "/usr/bin", "BATON_INTERNAL_TOKEN": "t", "XAUTHORITY": "/x", "DISPLAY": ":0"},
        ":1100",
        "/run/baton/x1100.auth",
    )
    assert env == {"PATH": "/usr/bin", "DISPLAY": ":1100", "XAUTHORITY": "/run/baton/x1100.auth"}
