"""An in-memory twin of the BrowserPage port for unit tests of the task runner."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from services.automation.cdp_hub import BrowserPipe
from services.automation.handback import PageSnapshot, WatchNotes
from services.automation.input_drain import DrainOutcome
from services.automation.page_port import (
    BROWSER_GONE_MESSAGE,
    ActionFailed,
    BrowserGone,
    Observation,
    PageScan,
)
from services.automation.steps import Action, Extract, Fill, Goto, WaitFor


@dataclass
class FakeBrowser:
    """Records the actions it performs; selectors in `missing` fail, `#slow` never ends."""

    display: str = ":1"
    pid: int | None = None
    cdp: BrowserPipe | None = None
    current_url: str = "about:blank"
    performed: list[Action] = field(default_factory=list)
    # The selectors remember_typed was given (a person typed into them).
    remembered: list[str] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)
    password_selectors: set[str] = field(default_factory=set)
    scan_result: PageScan = field(default_factory=lambda: PageScan(None, 0))
    observations: int = 0
    aria_observations: int = 0
    closed: bool = False
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    # Called before each action: lets a test check the state it runs in.
    on_perform: Callable[[Action], None] | None = None
    # Input drains asked for, and how many actions had run before each.
    drains: list[int] = field(default_factory=list)
    # Actions other than goto wait for this when set: a slow page.
    hold_actions: asyncio.Event | None = None
    # The hand-back watch's notes while one runs (a test notes a person's doings in them).
    notes: WatchNotes | None = None
    cookies: dict[tuple[str, str, str], str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.current_url

    async def perform(self, action: Action, timeout_ms: int) -> str:
        if self.gone.is_set():
            raise BrowserGone(BROWSER_GONE_MESSAGE)
        if self.on_perform is not None:
            self.on_perform(action)
        if self.hold_actions is not None and not isinstance(action, Goto):
            await self.hold_actions.wait()
        selector = getattr(action, "selector", None)
        if selector == "#slow":
            await asyncio.Event().wait()
        if selector in self.missing:
            raise ActionFailed(f"timed out after {timeout_ms} ms: {selector} not found")
        self.performed.append(action)
        if isinstance(action, Goto):
            self.current_url = action.url
        if isinstance(action, Fill) and action.value and "password" in action.selector:
            self.scan_result = PageScan(self.scan_result.captcha, empty_password_fields=0)
        if isinstance(action, Extract):
            return f"text of {action.selector}"
        if isinstance(action, WaitFor):
            await asyncio.sleep(0)
        return ""

    async def observe(self, with_aria: bool) -> Observation:
        if self.gone.is_set():
            raise BrowserGone(BROWSER_GONE_MESSAGE)
        self.observations += 1
        self.aria_observations += with_aria
        return Observation(self.current_url, "Fake", '- button "Go"' if with_aria else "")

    async def scan(self) -> PageScan:
        return self.scan_result

    async def is_secret_field(self, selector: str) -> bool:
        return selector in self.password_selectors

    async def screenshot(self) -> bytes:
        return b"\x89PNG fake"

    def alive(self) -> bool:
        return not self.gone.is_set()

    async def drain_input(self, timeout_s: float) -> DrainOutcome:
        self.drains.append(len(self.performed))
        return DrainOutcome(drained=True, elapsed_ms=0)

    async def close(self) -> None:
        self.closed = True

    async def start_watch(self, notes: WatchNotes) -> PageSnapshot:
        self.notes = notes
        return await self.snapshot()

    def stop_watch(self) -> None:
        self.notes = None

    async def probe(self, selector: str) -> tuple[str, bool]:
        return self.current_url, bool(selector) and selector not in self.missing

    async def remember_typed(self, selectors: Sequence[str], urls: Sequence[str] = ()) -> None:
        self.remembered.extend(selectors)

    def hide_typed(self, text: str) -> str:
        return text

    async def snapshot(self) -> PageSnapshot:
        if self.gone.is_set():
            raise BrowserGone(BROWSER_GONE_MESSAGE)
        return PageSnapshot(url=self.current_url, title="Fake", cookies=dict(self.cookies))


@dataclass
class FakeLauncher:
    launched: list[FakeBrowser] = field(default_factory=list)
    # Launches wait for this when set: a slow Chromium start.
    hold: asyncio.Event | None = None
    hold_actions: asyncio.Event | None = None
    on_perform: Callable[[Action], None] | None = None

    async def launch(
        self, session_id: str, display: str, width: int, height: int, xauthority: str = ""
    ) -> FakeBrowser:
        if self.hold is not None:
            await self.hold.wait()
        browser = FakeBrowser(
            display=display, on_perform=self.on_perform, hold_actions=self.hold_actions
        )
        self.launched.append(browser)
        return browser
