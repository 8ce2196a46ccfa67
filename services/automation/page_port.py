"""The port the task runner drives a browser through, and what it reports.

`ChromiumBrowser` (chromium.py) implements it with Playwright; the unit tests
use an in-memory twin.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from services.automation.cdp_hub import BrowserPipe
from services.automation.handback import PageSnapshot, WatchNotes
from services.automation.input_drain import DrainOutcome
from services.automation.steps import (
    Action,
    Fill,
    Type,
    describe,
    looks_like_password_selector,
)


class ActionFailed(Exception):
    """A browser action failed (timeout, missing element, navigation error)."""


class BrowserGone(Exception):
    """Chromium exited: crashed or killed."""


BROWSER_GONE_MESSAGE = "Chromium exited unexpectedly (it crashed or was killed)"


@dataclass(frozen=True)
class Observation:
    """What a planner sees of the page."""

    url: str
    title: str
    aria_snapshot: str = ""
    # Set on the first observation after a person handed control back:
    # what they did (handback.describe_handback).
    handback: str = ""


@dataclass(frozen=True)
class PageScan:
    """Things on the page that need a person."""

    # "reCAPTCHA", "hCaptcha" or "Turnstile" when such a frame is on the page.
    captcha: str | None
    # Visible password fields that have no value.
    empty_password_fields: int


class BrowserPage(Protocol):
    # Set when the browser went away without being closed.
    gone: asyncio.Event

    @property
    def url(self) -> str: ...

    async def perform(self, action: Action, timeout_ms: int) -> str:
        """Run `action`; return what it read (extract) or an empty string."""
        ...

    async def observe(self, with_aria: bool) -> Observation: ...

    async def scan(self) -> PageScan: ...

    async def is_secret_field(self, selector: str) -> bool:
        """True unless `selector` matches fields now and none is a password field."""
        ...

    async def screenshot(self) -> bytes: ...


class ManagedBrowser(BrowserPage, Protocol):
    """A session's browser as the service owns it."""

    display: str
    # The browser's main process, when known.
    pid: int | None
    # Where external CDP clients attach (cdp_hub.py); None: nowhere.
    cdp: BrowserPipe | None

    def alive(self) -> bool: ...

    async def drain_input(self, timeout_s: float) -> DrainOutcome:
        """Wait (bounded) until the page has had every X input queued before (input_drain.py)."""
        ...

    async def close(self) -> None:
        """Close the browser (or clean up after it died) and delete its profile."""
        ...

    async def start_watch(self, notes: WatchNotes) -> PageSnapshot:
        """Note a person's navigations, typed-into fields and downloads into
        `notes` until stop_watch; the page as it is now (handback.py)."""
        ...

    def stop_watch(self) -> None: ...

    async def probe(self, selector: str) -> tuple[str, bool]:
        """The page's URL, and whether `selector` matches in it (False when empty);
        InvalidArgument for a selector that is not one."""
        ...

    async def remember_typed(self, selectors: Sequence[str], urls: Sequence[str] = ()) -> None:
        """Keep what is now in these fields, and the values in these URLs (a
        person typed them), out of every later observation (person_typed.py)."""

    def hide_typed(self, text: str) -> str:
        """`text` without what people typed (remember_typed)."""
        ...

    async def snapshot(self) -> PageSnapshot:
        """The page's URL, title, cookies and storage, values as digests only."""
        ...


class BrowserLauncher(Protocol):
    async def launch(
        self, session_id: str, display: str, width: int, height: int, xauthority: str = ""
    ) -> ManagedBrowser:
        """A browser on `display`; `xauthority` is the display's cookie file."""
        ...


# Playwright matches the focused element with this CSS selector.
FOCUSED = ":focus"


async def describe_on_page(page: BrowserPage, action: Action) -> str:
    """`describe(action)`, showing a fill value or typed text only when the field is not secret."""
    if isinstance(action, Fill):
        secret = looks_like_password_selector(action.selector) or (
            await page.is_secret_field(action.selector)
        )
        return describe(action, secret=secret)
    if isinstance(action, Type):
        return describe(action, secret=await page.is_secret_field(FOCUSED))
    return describe(action)
