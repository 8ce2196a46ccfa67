"""Headful Chromium under Playwright: one driver per process, one browser per session."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import signal
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, CDPSession, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from services.automation.browser_user import (
    BrowserUsers,
    check_reachable,
    hand_over,
    launch_target,
)
from services.automation.captcha import first_captcha
from services.automation.cdp_hub import PIPE_PROGRAM, BrowserPipe, CdpHub
from services.automation.handback import PageSnapshot, WatchNotes, value_digest
from services.automation.input_drain import (
    DrainFailed,
    DrainOutcome,
    Point,
    Viewport,
    XdotoolPointer,
    drain_x_input,
    x_env,
)
from services.automation.page_port import (
    BROWSER_GONE_MESSAGE,
    ActionFailed,
    BrowserGone,
    Observation,
    PageScan,
)
from services.automation.person_typed import PLACEHOLDER, url_values, worth_hiding
from services.automation.proc_table import (
    browser_family,
    browser_main_pid,
    child_processes,
    chromium_children,
    grandchild_processes,
    reap_orphan_zombies,
    running,
    set_subreaper,
)
from services.automation.profile_reaper import kill_users, mark_owned, secure_delete
from services.automation.steps import (
    Action,
    Click,
    Extract,
    Fill,
    Goto,
    Press,
    RequestUser,
    Screenshot,
    Scroll,
    Select,
    Type,
    Wait,
    WaitFor,
)
from services.runtime.errors import InvalidArgument, Unavailable
from services.runtime.redaction import SECRET_FIELD_SCRIPT, scrub

log = logging.getLogger(__name__)

# Longest extract result and ARIA snapshot kept (characters).
MAX_RESULT_CHARS = 4000
MAX_ARIA_CHARS = 30000

_SCAN_SCRIPT = """() => ({
  frames: Array.from(document.querySelectorAll('iframe, frame')).map(f => f.src || ''),
  emptyPasswords: Array.from(document.querySelectorAll('input[type=password]'))
    .filter(e => !e.value && !e.disabled && e.getClientRects().length > 0).length,
})"""


# The hand-back watch (handback.py): which field a person's trusted input
# event went to, by label and selector, never its value. Installed in every
# document of the context; reports through TYPED_BINDING while watched.
TYPED_BINDING = "__batonTypedInto"
_TYPED_SCRIPT = """(() => {
  if (window.__batonTypedListening) return;
  Object.defineProperty(window, '__batonTypedListening', {value: true});
  const words = (s) => (s || '').replace(/\\s+/g, ' ').trim().slice(0, 200);
  const labelOf = (el) => {
    if (el.labels && el.labels.length) {
      // The label's own words: a label may wrap its field, whose text is not a name.
      const label = el.labels[0].cloneNode(true);
      const fields = label.querySelectorAll('input, textarea, select, [contenteditable]');
      fields.forEach((f) => f.remove());
      const named = words(label.textContent);
      if (named) return named;
    }
    const by = el.getAttribute('aria-labelledby');
    const labelled = by && document.getElementById(by.split(' ')[0]);
    if (labelled && !labelled.contains(el)) return words(labelled.textContent);
    return words(el.getAttribute('aria-label') || el.getAttribute('placeholder') ||
                 el.getAttribute('name') || el.id || el.tagName.toLowerCase());
  };
  const selectorOf = (el) => {
    const tag = el.tagName.toLowerCase();
    if (el.id) return '#' + CSS.escape(el.id);
    const name = el.getAttribute('name');
    if (name) return tag + '[name="' + CSS.escape(name) + '"]';
    const path = [];
    for (let node = el; node && node.nodeType === 1 && path.length < 6; node = node.parentElement) {
      let nth = 1;
      for (let s = node.previousElementSibling; s; s = s.previousElementSibling) {
        if (s.tagName === node.tagName) nth += 1;
      }
      path.unshift(node.tagName.toLowerCase() + ':nth-of-type(' + nth + ')');
    }
    return path.join(' > ');
  };
  window.addEventListener('input', (event) => {
    if (!event.isTrusted) return;
    const el = event.composedPath()[0];
    const report = window.__batonTypedInto;
    if (el instanceof Element && typeof report === 'function') report(labelOf(el), selectorOf(el));
  }, true);
})()"""

# The top page's origin and storage items, each value as a digest (FNV-1a):
# values never leave the page.
_STORAGE_SCRIPT = """() => {
  const digest = (s) => {
    let h = 0x811c9dc5;
    for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 0x01000193); }
    return (h >>> 0).toString(16) + ':' + s.length;
  };
  const items = [];
  for (const area of ['localStorage', 'sessionStorage']) {
    try {
      const store = window[area];
      for (let i = 0; i < store.length && i < 500; i++) {
        const key = store.key(i);
        items.push([area, key, digest(store.getItem(key) || '')]);
      }
    } catch (e) { /* storage refused here (an opaque origin): nothing to compare */ }
  }
  return {origin: location.origin, items};
}"""


# The input drain's listener (input_drain.py), run in an isolated world of the
# page's main frame: the page's own scripts cannot see or disturb it.
_DRAIN_WORLD = "baton-input-drain"
_DRAIN_ARM_SCRIPT = """(() => {
  if (globalThis.__batonDrain) globalThis.__batonDrain.stop();
  // Trusted pointer moves since armed (the marker may come before wait() is called).
  const moves = [];
  let wake = () => {};
  const onMove = (event) => {
    if (!event.isTrusted) return;
    if (moves.length < 1000) moves.push([event.screenX, event.screenY]);
    wake();
  };
  window.addEventListener('pointermove', onMove, {capture: true, passive: true});
  globalThis.__batonDrain = {
    wait(x, y, ms) {
      const at = () => moves.some((m) => Math.abs(m[0] - x) < 0.5 && Math.abs(m[1] - y) < 0.5);
      return new Promise((resolve) => {
        const timer = setTimeout(() => resolve(at()), ms);
        wake = () => { if (at()) { clearTimeout(timer); resolve(true); } };
        wake();
      });
    },
    stop() { window.removeEventListener('pointermove', onMove, {capture: true}); },
  };
  return {
    left: window.screenX + Math.round((window.outerWidth - window.innerWidth) / 2),
    top: window.screenY + window.outerHeight - window.innerHeight,
    width: window.innerWidth,
    height: window.innerHeight,
  };
})()"""


class CdpMarkerPage:
    """The drain's MarkerPage on a Playwright page, through its own CDP session."""

    def __init__(self, page: Page) -> None:
        self._page = page
        self._cdp: CDPSession | None = None
        self._context_id = 0

    async def _evaluate(self, expression: str, await_promise: bool = False) -> object:
        assert self._cdp is not None
        try:
            answer = await self._cdp.send(
                "Runtime.evaluate",
                {
                    "expression": expression,
                    "contextId": self._context_id,
                    "returnByValue": True,
                    "awaitPromise": await_promise,
                },
            )
        except PlaywrightError as error:
            # Mostly a navigation that destroyed the world mid-drain.
            raise DrainFailed(_first_line(error)) from None
        if "exceptionDetails" in answer:
            raise DrainFailed(str(answer["exceptionDetails"].get("text", "script error")))
        return answer["result"].get("value")

    async def arm(self) -> Viewport:
        try:
            self._cdp = await self._page.context.new_cdp_session(self._page)
            tree = await self._cdp.send("Page.getFrameTree")
            world = await self._cdp.send(
                "Page.createIsolatedWorld",
                {"frameId": tree["frameTree"]["frame"]["id"], "worldName": _DRAIN_WORLD},
            )
        except PlaywrightError as error:
            raise DrainFailed(_first_line(error)) from None
        self._context_id = int(world["executionContextId"])
        found = await self._evaluate(_DRAIN_ARM_SCRIPT)
        if not isinstance(found, dict):
            raise DrainFailed("the page gave no viewport")
        return Viewport(
            int(found["left"]), int(found["top"]), int(found["width"]), int(found["height"])
        )

    async def wait_for_pointer(self, at: Point, timeout_s: float) -> bool:
        ms = int(timeout_s * 1000)
        seen = await self._evaluate(f"__batonDrain.wait({at.x}, {at.y}, {ms})", True)
        return seen is True

    async def disarm(self) -> None:
        if self._cdp is None:
            return
        cdp, self._cdp = self._cdp, None
        with contextlib.suppress(PlaywrightError):
            await cdp.send(
                "Runtime.evaluate",
                {"expression": "__batonDrain.stop()", "contextId": self._context_id},
            )
            await cdp.detach()


@dataclass(frozen=True)
class WindowSize:
    width: int
    height: int


def chromium_args(window: WindowSize) -> list[str]:
    """Flags for a headful Chromium that fills its display and stays off the network."""
    return [
        # Without these Chromium phones home on a closed network and floods it.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--no-first-run",
        "--no-default-browser-check",
        "--no-pings",
        # Added to Playwright's lists (browser-pipe.py merges the switches).
        "--disable-features=Translate,MediaRouter,OptimizationHints,"
        # No spare renderer kept ready for the next tab: a session has one.
        "SpareRendererForSitePerProcess,"
        # The address bar's suggestions drawn by Chromium's own views, not by a
        # WebUI page kept loaded in a renderer of its own from the start.
        "WebUIOmniboxPopup,WebUIOmniboxAimPopup",
        # The network service in the browser process: one process fewer.
        "--enable-features=NetworkServiceInProcess2",
        # Xvfb has no GPU.
        "--disable-gpu",
        "--password-store=basic",
        "--window-position=0,0",
        f"--window-size={window.width},{window.height}",
    ]


def browser_env(
    inherited: Mapping[str, str],
    display: str,
    xauthority: str = "",
    temp_dir: Path | None = None,
) -> dict[str, str | float | bool]:
    """Chromium's environment: ours with DISPLAY and XAUTHORITY set and Baton's
    settings (secrets) removed; its temporary files and HOME in its own `temp_dir`,
    deleted with its profile (profile_reaper.py).

    XAUTHORITY is the display's own cookie file (services/display/README.md);
    without one, whatever XAUTHORITY we inherited goes too.
    """
    env: dict[str, str | float | bool] = {
        name: value
        for name, value in inherited.items()
        if not name.startswith("BATON_") and name != "XAUTHORITY"
    }
    env["DISPLAY"] = display
    if xauthority:
        env["XAUTHORITY"] = xauthority
    if temp_dir is not None:
        env["TMPDIR"] = str(temp_dir)
        # Its own user (browser_user.py) may not write ours.
        env["HOME"] = str(temp_dir)
    return env


def check_xauthority(path: str) -> str:
    if path and not path.startswith("/"):
        raise InvalidArgument(f"xauthority {path!r} is not an absolute path")
    return path


_DISPLAY = re.compile(r"^:\d{1,5}$")


def check_display(display: str) -> str:
    if not _DISPLAY.match(display):
        raise InvalidArgument(f"display {display!r} is not an X display such as ':101'")
    return display


def profile_prefix(session_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", session_id)[:40]
    return f"baton-profile-{safe}-"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    # Playwright appends a call log after the message; the first lines say it.
    text = text.split("\nCall log:", 1)[0].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = " ".join(lines[:2]) if lines else type(error).__name__
    # Drop the API name prefix ("Page.goto: ...").
    return re.sub(r"^[A-Z][A-Za-z]*\.[a-z_]+: ", "", message)


# How long after Playwright's launch the pipe trade may still be pending (it is
# done before Chromium starts: only a bug leaves it so).
PIPE_WAIT_S = 5.0

# How long a launch nobody waits for any more may take to finish before its
# processes are killed and its profile deleted anyway.
ABANDON_WAIT_S = 10.0


async def abandon_launch(
    launch: asyncio.Future[BrowserContext],
    profile_dir: Path,
    late: Callable[[BrowserContext], None],
    wait_s: float = ABANDON_WAIT_S,
) -> None:
    """Close a browser whose launch nobody waits for any more; delete its profile.

    The wait is bounded: when a warm slot went away while its Chromium started,
    Playwright's launch could stay pending with no Chromium process left, until its
    own 3-minute launch timeout, and the profile and TMPDIR stayed as long (the
    churn test, README "Crashes and processes"). After `wait_s` whatever runs on
    the profile is killed and the profile deleted; a context the launch still
    delivers later goes to `late`, to be closed.
    """

    def finished_late(done: asyncio.Future[BrowserContext]) -> None:
        if not done.cancelled() and done.exception() is None:
            late(done.result())

    try:
        context = await asyncio.wait_for(asyncio.shield(launch), wait_s)
    except TimeoutError:
        log.warning("abandoned launch for %s still pending after %.0f s", profile_dir, wait_s)
        launch.add_done_callback(finished_late)
    except Exception as error:
        # Mostly: its display went away.
        log.info("abandoned launch for %s: %s", profile_dir, _first_line(error))
    else:
        try:
            await asyncio.wait_for(context.close(), 10)
        except Exception as error:
            log.info("closing abandoned Chromium for %s: %s", profile_dir, error)
    await asyncio.to_thread(_kill_and_delete, profile_dir)


def _kill_and_delete(profile_dir: Path) -> None:
    kill_users(profile_dir)
    secure_delete(profile_dir)


class ChromiumBrowser:
    """One session's Chromium: implements the BrowserPage port."""

    def __init__(
        self,
        context: BrowserContext,
        profile_dir: Path,
        display: str,
        on_closed: Callable[[ChromiumBrowser], None] = lambda _browser: None,
        x_environment: Mapping[str, str] | None = None,
        cdp: BrowserPipe | None = None,
    ) -> None:
        self._context = context
        # External CDP clients attach here (cdp_hub.py).
        self.cdp = cdp
        # What xdotool needs to reach this browser's display (the input drain).
        self._x_env = dict(x_environment or {"DISPLAY": display})
        self._on_closed = on_closed
        self.profile_dir = profile_dir
        self.display = display
        self.pid = browser_main_pid(grandchild_processes(os.getpid()), profile_dir)
        self._page: Page | None = None
        # The hand-back watch's notes while a person holds control (handback.py).
        self._notes: WatchNotes | None = None
        # What people typed in takeovers, kept out of observations (person_typed.py).
        self._typed_by_people: set[str] = set()
        self._watch_installed = False
        for page in context.pages:
            self._on_page(page)
        self._closing = False
        self.closed = False
        # Set when Chromium went away without us closing it.
        self.gone = asyncio.Event()
        context.on("close", self._on_context_close)
        context.on("page", self._on_page)

    def _on_context_close(self, _context: BrowserContext) -> None:
        if not self._closing:
            log.warning("Chromium for %s exited unexpectedly", self.profile_dir)
            self.gone.set()

    def _on_page(self, page: Page) -> None:
        # A popup or a new tab becomes the page the task drives.
        self._page = page
        page.on("close", self._on_page_close)
        page.on("framenavigated", lambda frame: self._on_navigated(page, frame))
        page.on("download", self._on_download)

    def _on_navigated(self, page: Page, frame: Any) -> None:
        if self._notes is not None and frame is page.main_frame:
            self._notes.navigated(frame.url)

    def _on_download(self, download: Any) -> None:
        if self._notes is not None:
            self._notes.downloaded(download.suggested_filename, download.url)

    def _on_typed(self, source: Any, label: object, selector: object) -> None:
        if self._notes is not None and isinstance(label, str) and isinstance(selector, str):
            frame = source.get("frame") if isinstance(source, dict) else None
            self._notes.typed(label, selector, frame.url if frame is not None else self.url)

    async def start_watch(self, notes: WatchNotes) -> PageSnapshot:
        """Note what a person does from now on into `notes`; the page as it is now."""
        if not self._watch_installed:
            self._watch_installed = True
            try:
                await self._context.expose_binding(TYPED_BINDING, self._on_typed)
                await self._context.add_init_script(script=_TYPED_SCRIPT)
            except PlaywrightError as error:
                raise self._translate(error, 0) from None
            # Documents already open get the listener too (init scripts run on new ones).
            for page in self._context.pages:
                for frame in page.frames:
                    with contextlib.suppress(PlaywrightError):
                        await frame.evaluate(_TYPED_SCRIPT)
        self._notes = notes
        return await self.snapshot()

    def stop_watch(self) -> None:
        self._notes = None

    async def snapshot(self) -> PageSnapshot:
        """The page's URL, title, cookies and storage, each value as a digest."""
        page = await self._current_page()
        try:
            cookies = await self._context.cookies()
            title = await page.title()
            storage = await page.evaluate(_STORAGE_SCRIPT)
        except PlaywrightError as error:
            raise self._translate(error, 5000) from None
        return PageSnapshot(
            url=page.url,
            title=title,
            cookies={
                (c.get("name", ""), c.get("domain", ""), c.get("path", "")): value_digest(
                    c.get("value", "")
                )
                for c in cookies
            },
            origin=str(storage["origin"]),
            storage={(str(a), str(k)): str(d) for a, k, d in storage["items"]},
        )

    def _on_page_close(self, page: Page) -> None:
        if page is self._page:
            remaining = [p for p in self._context.pages if not p.is_closed()]
            self._page = remaining[-1] if remaining else None

    def alive(self) -> bool:
        if self.gone.is_set():
            return False
        if self.pid is None:
            return True
        # One file per browser: ListBrowsers asks this of every session (bench figure 4).
        return running(self.pid)

    async def _current_page(self) -> Page:
        if self._page is None or self._page.is_closed():
            if not self.alive():
                raise BrowserGone(BROWSER_GONE_MESSAGE)
            self._page = await self._context.new_page()
            self._page.on("close", self._on_page_close)
        return self._page

    @property
    def url(self) -> str:
        if self._page is None or self._page.is_closed():
            return ""
        # Steps and the timeline carry it, and a page may put typed text in its URL.
        return self.hide_typed(self._page.url)

    def _translate(
        self, error: PlaywrightError, timeout_ms: int, action: Action | None = None
    ) -> Exception:
        if not self.alive():
            return BrowserGone(BROWSER_GONE_MESSAGE)
        # Playwright's messages may quote what was filled or typed: never pass it on.
        secrets: tuple[str, ...] = ()
        if isinstance(action, Fill):
            secrets = (action.value,)
        elif isinstance(action, Type):
            secrets = (action.text,)
        line = scrub(_first_line(error), secrets)
        if isinstance(error, PlaywrightTimeout):
            return ActionFailed(f"timed out after {timeout_ms} ms: {line}")
        return ActionFailed(line)

    async def perform(self, action: Action, timeout_ms: int) -> str:
        page = await self._current_page()
        try:
            result = await self._perform(page, action, timeout_ms)
        except PlaywrightError as error:
            raise self._translate(error, timeout_ms, action) from None
        # What the agent reads goes to its model and every record of the step:
        # what people typed stays out of it as out of observations (person_typed.py).
        return self.hide_typed(result)

    async def _perform(self, page: Page, action: Action, timeout_ms: int) -> str:
        timeout = timeout_ms
        match action:
            case Goto(url):
                await page.goto(url, timeout=timeout)
            case Click(selector):
                await page.locator(selector).first.click(timeout=timeout)
            case Fill(selector, value):
                await page.locator(selector).first.fill(value, timeout=timeout)
            case Type(text):
                await page.keyboard.type(text)
            case Press(key):
                await page.keyboard.press(key)
            case Select(selector, value):
                await page.locator(selector).first.select_option(value, timeout=timeout)
            case Scroll(dx, dy):
                await page.mouse.wheel(dx, dy)
            case Wait(ms):
                await asyncio.sleep(ms / 1000)
            case WaitFor(selector):
                await page.locator(selector).first.wait_for(state="visible", timeout=timeout)
            case Extract(selector):
                text = await page.locator(selector).first.inner_text(timeout=timeout)
                return text[:MAX_RESULT_CHARS]
            case Screenshot():
                png = await page.screenshot(timeout=timeout)
                return f"screenshot of {len(png)} bytes"
            case RequestUser():
                raise ActionFailed("request_user is handled by the task, not the browser")
        return ""

    async def observe(self, with_aria: bool) -> Observation:
        page = await self._current_page()
        try:
            title = await page.title()
            aria = ""
            if with_aria:
                aria = await page.locator("body").aria_snapshot(timeout=5000)
        except PlaywrightError as error:
            raise self._translate(error, 5000) from None
        hidden = self._typed_by_people
        return Observation(
            url=scrub(page.url, hidden, PLACEHOLDER),
            title=scrub(title, hidden, PLACEHOLDER),
            aria_snapshot=scrub(aria, hidden, PLACEHOLDER)[:MAX_ARIA_CHARS],
        )

    async def probe(self, selector: str) -> tuple[str, bool]:
        page = await self._current_page()
        if not selector:
            return page.url, False
        try:
            found = await page.locator(selector).count() > 0
        except PlaywrightError as error:
            if self.gone.is_set():
                raise self._translate(error, 0) from None
            raise InvalidArgument(f"{selector!r} is not a selector: {_first_line(error)}") from None
        return page.url, found

    async def remember_typed(self, selectors: Sequence[str], urls: Sequence[str] = ()) -> None:
        """Keep the values now in these fields (a person typed into them), and the
        values in these URLs (a person went to them), out of every later
        observation; read here, never sent anywhere."""
        for url in urls:
            self._typed_by_people.update(url_values(url))
        page = await self._current_page()
        for selector in selectors:
            with contextlib.suppress(PlaywrightError):
                value = await page.eval_on_selector(
                    selector, "(element) => element.value ?? element.textContent"
                )
                hidden = worth_hiding(value)
                if hidden is not None:
                    self._typed_by_people.add(hidden)

    def hide_typed(self, text: str) -> str:
        return scrub(text, self._typed_by_people, PLACEHOLDER)

    async def scan(self) -> PageScan:
        page = await self._current_page()
        try:
            found = await page.evaluate(_SCAN_SCRIPT)
        except PlaywrightError as error:
            translated = self._translate(error, 0)
            if isinstance(translated, BrowserGone):
                raise translated from None
            # A navigation destroyed the context mid-scan: nothing found this time.
            return PageScan(captcha=None, empty_password_fields=0)
        frame_urls = [frame.url for frame in page.frames] + list(found["frames"])
        return PageScan(
            captcha=first_captcha(frame_urls),
            empty_password_fields=int(found["emptyPasswords"]),
        )

    async def is_secret_field(self, selector: str) -> bool:
        page = await self._current_page()
        try:
            result: bool = await page.locator(selector).evaluate_all(SECRET_FIELD_SCRIPT)
        except PlaywrightError:
            return True
        return result

    async def screenshot(self) -> bytes:
        page = await self._current_page()
        try:
            return await page.screenshot(timeout=10000)
        except PlaywrightError as error:
            raise self._translate(error, 10000) from None

    async def drain_input(self, timeout_s: float) -> DrainOutcome:
        """Wait until the page has had every X input queued before (input_drain.py)."""
        page = await self._current_page()
        return await drain_x_input(CdpMarkerPage(page), XdotoolPointer(self._x_env), timeout_s)

    async def close(self) -> None:
        """Close Chromium (or clean up after it died), kill stragglers, delete the profile."""
        if self.closed:
            return
        self._closing = True
        try:
            await asyncio.wait_for(self._context.close(), 10)
        except Exception as error:  # the driver may be gone too; clean up regardless
            log.info("closing Chromium for %s: %s", self.profile_dir, error)
        await self._kill_leftovers()
        await asyncio.to_thread(secure_delete, self.profile_dir)
        self.closed = True
        self._on_closed(self)

    async def _kill_leftovers(self, timeout_s: float = 5.0) -> None:
        if self.pid is None:
            return
        deadline = time.monotonic() + timeout_s
        while True:
            left = browser_family(self.pid, self.profile_dir)
            reap_orphan_zombies()
            if not left or time.monotonic() > deadline:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            for entry in left:
                if not entry.zombie:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(entry.pid, signal.SIGKILL)
            await asyncio.sleep(0.05)
        if left:
            log.warning("Chromium processes left behind: %s", [e.pid for e in left])


class PlaywrightDriver:
    """The process's one Playwright driver; launches a Chromium per session."""

    # Drivers running in this process (tests run more than one): the last one
    # to stop waits for the crash handlers and gives up the subreaper role.
    _running = 0

    def __init__(
        self,
        chromium_path: str,
        profile_root: Path | None,
        environ: Mapping[str, str],
        users: BrowserUsers,
    ) -> None:
        self._chromium_path = chromium_path
        self._profile_root = profile_root
        self._users = users
        self._environ = dict(environ)
        self._playwright: Playwright | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._started = False
        # Every browser launched and not yet closed, whoever owns it.
        self._browsers: set[ChromiumBrowser] = set()
        self._abandoned: set[asyncio.Future[None]] = set()
        self._hub = CdpHub()

    async def start(self) -> None:
        PlaywrightDriver._running += 1
        self._started = True
        if self._users.base is not None:
            # The browsers' own users must reach their profiles and TMPDIRs.
            if self._profile_root is not None:
                self._profile_root.mkdir(parents=True, exist_ok=True)
                self._profile_root.chmod(self._profile_root.stat().st_mode | 0o001)
                check_reachable(self._profile_root)
            check_reachable(Path(tempfile.gettempdir()))
        set_subreaper(True)
        self._hub.start()
        self._playwright = await async_playwright().start()
        self._reaper = asyncio.create_task(self._reap_forever())

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            reap_orphan_zombies()

    async def launch(
        self, session_id: str, display: str, width: int, height: int, xauthority: str = ""
    ) -> ChromiumBrowser:
        window = WindowSize(width, height)
        if self._playwright is None:
            raise Unavailable("the Playwright driver is not running")
        check_display(display)
        check_xauthority(xauthority)
        if self._profile_root is not None:
            self._profile_root.mkdir(parents=True, exist_ok=True)
        profile_dir = Path(
            tempfile.mkdtemp(prefix=profile_prefix(session_id), dir=self._profile_root)
        )
        temp_dir = mark_owned(profile_dir)
        uid = self._users.uid_for(display)
        executable, env = launch_target(
            uid,
            self._chromium_path,
            browser_env(
                self._environ, display, hand_over(uid, profile_dir, temp_dir, xauthority), temp_dir
            ),
        )
        # Chromium's pipe goes through our CDP hub (cdp_hub.py): browser-pipe.py first.
        token, piped = self._hub.expect()
        env.update(self._hub.environment(token, executable))
        executable = str(PIPE_PROGRAM)
        launch = asyncio.ensure_future(
            self._playwright.chromium.launch_persistent_context(
                profile_dir,
                executable_path=executable,
                headless=False,
                # Playwright passes --no-sandbox unless told (README.md, "Isolation").
                chromium_sandbox=True,
                # The page follows the window, which fills the display.
                no_viewport=True,
                args=chromium_args(window),
                env=env,
                handle_sigint=False,
                handle_sigterm=False,
                handle_sighup=False,
            )
        )
        try:
            context = await asyncio.shield(launch)
            # browser-pipe.py traded the pipe before Chromium started.
            pipe = await asyncio.wait_for(asyncio.shield(piped), PIPE_WAIT_S)
        except (PlaywrightError, TimeoutError) as error:
            self._hub.forget(token)
            if launch.done() and not launch.cancelled() and launch.exception() is None:
                self._close_late(launch.result())
            secure_delete(profile_dir)
            raise Unavailable(
                f"cannot launch Chromium ({self._chromium_path}) on display {display}: "
                f"{_first_line(error)}"
            ) from None
        except BaseException:
            self._hub.forget(token)
            # Cancelled mid-launch: the driver goes on starting Chromium, which
            # would write to the profile again. Let the launch finish (for a
            # while), then close what it started and delete the profile.
            self._track(abandon_launch(launch, profile_dir, self._close_late))
            raise
        browser = ChromiumBrowser(
            context,
            profile_dir,
            display,
            self._closed,
            x_env(self._environ, display, xauthority),
            pipe,
        )
        self._browsers.add(browser)
        log.info("launched Chromium pid %s on %s for %s", browser.pid, display, session_id)
        return browser

    def _track(self, cleanup: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(cleanup)
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)

    def _close_late(self, context: BrowserContext) -> None:
        """A launch given up on finished after all: close what it started."""

        async def close() -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(context.close(), 10)

        self._track(close())

    def _closed(self, browser: ChromiumBrowser) -> None:
        self._browsers.discard(browser)
        # A closed browser's Playwright objects (context, pages, channels) refer to
        # each other: only the cycle collector frees them, and its full collections
        # are rare, so each session's would stay behind for a long while (README
        # "Memory"). Collect once the closing call has returned.
        asyncio.get_running_loop().call_soon(gc.collect)

    async def stop(self) -> None:
        # Launches abandoned mid-way, then browsers their sessions did not close
        # (a launch that finished during shutdown): close them while the driver
        # still runs.
        await asyncio.gather(*self._abandoned)
        for browser in list(self._browsers):
            if not browser.closed:
                await browser.close()
        self._browsers.clear()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        if self._playwright is not None:
            try:
                await self._playwright.stop()
            except Exception as error:
                log.warning("stopping the Playwright driver: %s", error)
            self._playwright = None
        reap_orphan_zombies()
        self._hub.stop()
        if not self._started:
            return
        self._started = False
        PlaywrightDriver._running -= 1
        if PlaywrightDriver._running == 0:
            # Crash handlers exit shortly after their browsers: reap them before
            # we stop being the subreaper they are re-parented to.
            deadline = time.monotonic() + 3
            while list(chromium_children(child_processes(os.getpid()), os.getpid())):
                reap_orphan_zombies()
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            set_subreaper(False)
