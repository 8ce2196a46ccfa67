"""XInputDrain: before the agent acts again, the page has had every X input queued before.

A person's keys travel edge -> websockify -> Xvnc -> X server -> Chromium's X
connection, and Chromium hands them to the page later than the agent's CDP input
(over 200 ms seen under load). So a key typed while the person still held control
could land after the agent's first action once control is back. The drain closes
that seam (services/automation/README.md, "Draining the person's input"):

1. arm a listener in the page (an isolated world: the page's scripts see nothing
   of it) and learn where the page's viewport is on the screen;
2. move the X pointer one pixel through XTEST, which queues behind every X input
   event already in the server, and wait until the page sees a pointermove there.
   X delivers events to Chromium in order and Chromium forwards input to the page
   in order, so the marker's arrival means every earlier key has arrived;
3. move the pointer back.

It is bounded: when the marker is not seen in time (a page mid-navigation, the
pointer over an iframe, no xdotool), it logs a warning and the agent goes on.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

XDOTOOL = "xdotool"


@dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclass(frozen=True)
class Viewport:
    """The page's viewport in screen (X root window) coordinates."""

    left: int
    top: int
    width: int
    height: int

    def contains(self, point: Point) -> bool:
        return (
            self.left <= point.x < self.left + self.width
            and self.top <= point.y < self.top + self.height
        )


class DrainFailed(Exception):
    """A part of the drain could not run (the page navigated, xdotool failed)."""


class MarkerPage(Protocol):
    """The page side: a listener that reports trusted pointer moves."""

    async def arm(self) -> Viewport:
        """Start listening for pointer moves; where the viewport is on the screen."""
        ...

    async def wait_for_pointer(self, at: Point, timeout_s: float) -> bool:
        """True once a trusted pointermove at `at` (screen coordinates) reached the page."""
        ...

    async def disarm(self) -> None: ...


class XPointer(Protocol):
    """The X side: the pointer of the session's display, moved through XTEST."""

    async def location(self) -> Point: ...

    async def move(self, path: list[tuple[int, int]]) -> None:
        """Relative moves, one after the other (XTEST: queued behind earlier input)."""
        ...


@dataclass(frozen=True)
class MarkerPlan:
    # Where the pointer goes first (absolute), when it is not over the page.
    enter: Point | None
    # The marker: a one-pixel move the page must see, and where it lands.
    nudge: tuple[int, int]
    marker: Point


def plan_marker(pointer: Point, viewport: Viewport) -> MarkerPlan:
    """A one-pixel move that stays inside the page, from the pointer or from inside the page.

    Over the page, the pointer moves one pixel (right, or left at the right edge) and
    back: the page sees the pointer jitter by a pixel, nothing else. Elsewhere (over
    the toolbar), it first goes to the viewport's bottom-left corner, since a move over
    the browser's own UI never reaches the page.
    """
    start = pointer
    enter = None
    if not viewport.contains(pointer):
        start = Point(viewport.left + 1, viewport.top + viewport.height - 2)
        enter = start
    dx = 1 if start.x + 1 < viewport.left + viewport.width else -1
    return MarkerPlan(enter=enter, nudge=(dx, 0), marker=Point(start.x + dx, start.y))


@dataclass(frozen=True)
class DrainOutcome:
    # True when the page saw the marker: every earlier X input had reached it.
    drained: bool
    elapsed_ms: float
    reason: str = ""


async def drain_x_input(page: MarkerPage, pointer: XPointer, timeout_s: float) -> DrainOutcome:
    """Wait (at most `timeout_s`) until the page has had every X input queued before."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            outcome = await _drain(page, pointer, started + timeout_s)
    except TimeoutError:
        outcome = DrainOutcome(False, 0, f"no answer within {timeout_s:g} s")
    except DrainFailed as error:
        outcome = DrainOutcome(False, 0, str(error))
    return DrainOutcome(outcome.drained, (time.monotonic() - started) * 1000, outcome.reason)


async def _drain(page: MarkerPage, pointer: XPointer, deadline: float) -> DrainOutcome:
    viewport = await page.arm()
    try:
        at = await pointer.location()
        plan = plan_marker(at, viewport)
        if plan.enter is not None:
            # XTEST moves are relative: go in from where the pointer is.
            await pointer.move([(plan.enter.x - at.x, plan.enter.y - at.y)])
        await pointer.move([plan.nudge])
        seen = await page.wait_for_pointer(plan.marker, max(0.0, deadline - time.monotonic()))
        # Back where the person left it, whatever happened.
        back = (at.x - plan.marker.x, at.y - plan.marker.y)
        await pointer.move([back])
    finally:
        await page.disarm()
    if not seen:
        return DrainOutcome(False, 0, "the page did not see the marker")
    return DrainOutcome(True, 0)


def location_argv() -> list[str]:
    return [XDOTOOL, "getmouselocation", "--shell"]


def move_argv(path: list[tuple[int, int]]) -> list[str]:
    """xdotool's relative moves go through XTEST (its absolute ones warp, out of order)."""
    argv = [XDOTOOL]
    for dx, dy in path:
        argv += ["mousemove_relative", "--", str(dx), str(dy)]
    return argv


_LOCATION = re.compile(r"^X=(-?\d+)\nY=(-?\d+)$", re.MULTILINE)


def parse_location(output: str) -> Point:
    found = _LOCATION.search(output)
    if found is None:
        raise DrainFailed(f"xdotool gave no pointer location: {output[:200]!r}")
    return Point(int(found.group(1)), int(found.group(2)))


def x_env(inherited: Mapping[str, str], display: str, xauthority: str) -> dict[str, str]:
    """xdotool's environment: the session's display and its cookie file, nothing of Baton's."""
    env = {
        name: value
        for name, value in inherited.items()
        if not name.startswith("BATON_") and name not in ("XAUTHORITY", "DISPLAY")
    }
    env["DISPLAY"] = display
    if xauthority:
        env["XAUTHORITY"] = xauthority
    return env


class XdotoolPointer:
    """XPointer with Debian's xdotool (a few ms a call)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = dict(env)

    async def _run(self, argv: list[str]) -> str:
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=self._env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError:
            raise DrainFailed("xdotool not found: install the Debian package xdotool") from None
        try:
            out, err = await process.communicate()
        except BaseException:
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        if process.returncode != 0:
            raise DrainFailed(f"xdotool failed: {err.decode(errors='replace').strip()[:200]}")
        return out.decode(errors="replace")

    async def location(self) -> Point:
        return parse_location(await self._run(location_argv()))

    async def move(self, path: list[tuple[int, int]]) -> None:
        await self._run(move_argv(path))
