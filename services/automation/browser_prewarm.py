"""Pre-warmed browsers: a Chromium already running on each warm display slot.

The display service keeps a pool of warm slots (X + VNC, no session). Launching
Chromium is most of a warm session's start, so this keeps one running (fresh
profile, about:blank) on each warm slot of this host, and `StartTask` on that
display adopts it instead of launching. `DisplaySlotFeed` (display_feed.py)
tells it which slots are warm; `BrowserPrewarmer` owns the browsers until one
is taken, and closes them (profile deleted) when their slot goes away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from services.automation.page_port import BrowserLauncher, ManagedBrowser

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlotView:
    """What the prewarmer needs to know of one display slot."""

    slot_id: str
    display: str
    width: int
    height: int
    # Ready and waiting in the warm pool, held by no session.
    warm_ready: bool
    # The display's Xauthority file.
    xauthority: str = ""


@dataclass(frozen=True)
class WarmBrowser:
    """A pre-warmed browser that is up and waits for a task."""

    slot_id: str
    display: str
    width: int
    height: int
    pid: int | None


@dataclass
class _Warm:
    slot: SlotView
    launch: asyncio.Task[ManagedBrowser]
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


def warm_profile_name(display: str) -> str:
    """The name the launcher puts in a pre-warmed browser's profile directory."""
    return "warm" + display.lstrip(":")


class BrowserPrewarmer:
    """Keeps one launched Chromium per warm slot, keyed by display, until taken."""

    def __init__(
        self,
        launcher: BrowserLauncher,
        display_in_use: Callable[[str], bool] = lambda _display: False,
    ) -> None:
        self._launcher = launcher
        # True when a session's browser is on (or being launched on) the display:
        # a warm event that arrives late must not put a second browser there.
        self._display_in_use = display_in_use
        self._by_display: dict[str, _Warm] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False

    # ---- what the display service reports

    def slot_warmed(self, slot: SlotView) -> None:
        if self._closed or not slot.warm_ready:
            return
        current = self._by_display.get(slot.display)
        if current is not None:
            if current.slot.slot_id == slot.slot_id:
                return
            self._drop(current)
        if self._display_in_use(slot.display):
            return
        warm = _Warm(slot=slot, launch=asyncio.create_task(self._launch(slot)))
        warm.launch.add_done_callback(lambda _task: self._launched(warm))
        self._by_display[slot.display] = warm

    def slot_gone(self, slot_id: str) -> None:
        """The slot was released or failed: its warm browser (if any) goes too."""
        for warm in list(self._by_display.values()):
            if warm.slot.slot_id == slot_id:
                self._drop(warm)

    def reconcile(self, slots: Iterable[SlotView]) -> None:
        """The display service's full list (after a (re)connection)."""
        slots = list(slots)
        live = {slot.slot_id for slot in slots}
        for warm in list(self._by_display.values()):
            if warm.slot.slot_id not in live:
                self._drop(warm)
        for slot in slots:
            self.slot_warmed(slot)

    # ---- what StartTask asks

    def ready(self) -> list[WarmBrowser]:
        """The pre-warmed browsers that are up, by display."""
        browsers = []
        for display, warm in sorted(self._by_display.items()):
            browser = _result(warm.launch)
            if browser is not None and browser.alive():
                slot = warm.slot
                browsers.append(
                    WarmBrowser(slot.slot_id, display, slot.width, slot.height, browser.pid)
                )
        return browsers

    async def take(self, display: str, width: int, height: int) -> ManagedBrowser | None:
        """The display's pre-warmed browser, now the caller's; None when there is none.

        A launch still in progress is awaited: it is further along than a new one.
        A browser of another size is closed first (the caller launches its own).
        """
        warm = self._by_display.pop(display, None)
        if warm is None:
            return None
        if (warm.slot.width, warm.slot.height) != (width, height):
            # Gone from the display before the caller's own browser starts there.
            await asyncio.shield(self._in_background(self._dispose(warm)))
            return None
        try:
            browser = await asyncio.shield(warm.launch)
        except asyncio.CancelledError:
            # The caller went away mid-launch: nobody will use this browser.
            self._in_background(self._dispose(warm))
            raise
        except Exception as error:
            log.warning("pre-warmed Chromium on %s did not start: %s", display, error)
            return None
        if warm.watcher is not None:
            warm.watcher.cancel()
        if not browser.alive():
            await asyncio.shield(self._in_background(self._dispose(warm)))
            return None
        log.info("StartTask on %s adopts pre-warmed Chromium pid %s", display, browser.pid)
        return browser

    async def close(self) -> None:
        """Close every pre-warmed browser (and any launch in flight); delete their profiles."""
        self._closed = True
        for warm in list(self._by_display.values()):
            self._drop(warm)
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # ---- inside

    async def _launch(self, slot: SlotView) -> ManagedBrowser:
        return await self._launcher.launch(
            warm_profile_name(slot.display), slot.display, slot.width, slot.height, slot.xauthority
        )

    def _launched(self, warm: _Warm) -> None:
        if warm.launch.cancelled():
            return
        error = warm.launch.exception()
        if error is not None:
            if self._by_display.get(warm.slot.display) is warm:
                del self._by_display[warm.slot.display]
                log.warning("cannot pre-warm Chromium on %s: %s", warm.slot.display, error)
            return
        if self._by_display.get(warm.slot.display) is warm:
            warm.watcher = asyncio.create_task(self._watch(warm, warm.launch.result()))

    async def _watch(self, warm: _Warm, browser: ManagedBrowser) -> None:
        """A pre-warmed browser that dies while waiting is cleaned up, not handed out."""
        await browser.gone.wait()
        if self._by_display.get(warm.slot.display) is warm:
            log.warning("pre-warmed Chromium on %s exited", warm.slot.display)
            del self._by_display[warm.slot.display]
            # Its profile and any helper left behind are removed.
            self._in_background(browser.close())

    def _drop(self, warm: _Warm) -> None:
        if self._by_display.get(warm.slot.display) is warm:
            del self._by_display[warm.slot.display]
        self._in_background(self._dispose(warm))

    async def _dispose(self, warm: _Warm) -> None:
        if warm.watcher is not None and warm.watcher is not asyncio.current_task():
            warm.watcher.cancel()
        if not warm.launch.done():
            # The launcher cleans up a launch cancelled mid-way (profile included).
            warm.launch.cancel()
        await asyncio.wait([warm.launch])
        browser = _result(warm.launch)
        if browser is not None:
            await browser.close()

    def _in_background(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task


def _result(task: asyncio.Task[ManagedBrowser]) -> ManagedBrowser | None:
    if not task.done() or task.cancelled() or task.exception() is not None:
        return None
    return task.result()
