"""Figure 2.1 (issue 16, figure 1): key to pixel through a real viewer.

noVNC (the build clients/js bundles into the live view the edge serves) in a headless Chromium
driven by Playwright: a key pressed into noVNC's canvas, timed inside the page
from the keydown to the moment noVNC draws the changed square onto its visible
canvas. noVNC negotiates what it always does (Tight with JPEG, at its default
quality or at the live view's quality settings); the edge's stream and the slot's
own websockify are measured in alternating blocks, as in figure 1.

The harness page must come from the edge's origin for the edge path (the edge
refuses stream WebSockets from other origins: services/edge/origins.py), so it
is written into a document the edge served. The bench serves noVNC's modules
(clients/js's @novnc/novnc) on its own loopback port to both paths, and the
harness itself there for the bare path. See bench/README.md, "Second
round", for the method and its resolution.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from bench.key_page import MARGIN, SCROLL_S, SQUARE
from bench.latency import BLOCK, viewer_process
from bench.stack import BenchStack
from bench.stats import ratio, summary_ms
from services.runtime.processes import require_binary

HARNESS_PATH = "/bench/novnc-viewer.html"


@dataclass(frozen=True)
class Quality:
    """noVNC's JPEG quality and compression levels (0-9), as the viewer sets them."""

    name: str
    quality: int
    compression: int


# noVNC's own defaults (core/rfb.js), which the console's live view keeps, and the
# three choices of the embeddable live view (clients/js/src/live-view.ts).
QUALITIES = (
    Quality("novnc-default", 6, 2),
    Quality("low", 1, 9),
    Quality("medium", 5, 6),
    Quality("high", 8, 2),
)

# Before noVNC makes its canvases: every 2D context asks for willReadFrequently,
# so reading one pixel back is a copy from memory, not a GPU readback (the same
# for both paths); and the bytes every WebSocket of the page receives are
# counted (figure 2.2). Then the harness: connect, and time keydown -> changed
# pixel at the moment noVNC's Display.flip() draws onto the visible canvas.
INIT_SCRIPT = """
const getContext = HTMLCanvasElement.prototype.getContext;
HTMLCanvasElement.prototype.getContext = function (kind, options) {
  if (kind === "2d") options = { ...(options || {}), willReadFrequently: true };
  return getContext.call(this, kind, options);
};
const onmessage = Object.getOwnPropertyDescriptor(WebSocket.prototype, "onmessage");
Object.defineProperty(WebSocket.prototype, "onmessage", {
  configurable: true,
  get() { return onmessage.get.call(this); },
  set(handler) {
    const counted = handler && ((e) => {
      window.benchBytes = (window.benchBytes || 0) + (e.data.byteLength || 0);
      return handler(e);
    });
    onmessage.set.call(this, counted);
  },
});
"""

HARNESS_JS = (Path(__file__).parent / "novnc_harness.js").read_text()
# The noVNC the live view is built from (clients/js/package.json): the edge serves
# it only inside that bundle, so the bench serves its modules itself.
NOVNC_DIR = Path(__file__).resolve().parents[1] / "clients/js/node_modules/@novnc/novnc"


def harness_html(server: str) -> str:
    """The harness page, importing noVNC from the bench's server at `server`."""
    script = HARNESS_JS.replace('from "/novnc/', f'from "{server}/novnc/')
    return (
        "<!doctype html>\n<html><head><title>Baton bench: noVNC</title></head>\n"
        '<body style="margin:0;background:#222">\n<div id="screen"></div>\n'
        f'<script type="module">\n{script}</script>\n</body></html>\n'
    )


@dataclass(frozen=True)
class ViewerSide:
    """Where the viewer's Chromium runs and reaches the bench's server: this
    host over loopback, or figure 2.2's namespace behind its link."""

    host: str = "127.0.0.1"
    # A program run as Chromium (None: Chromium itself).
    chromium: str | None = None


LOCAL = ViewerSide()


@contextlib.asynccontextmanager
async def harness_server(host: str = "127.0.0.1") -> AsyncIterator[str]:
    """noVNC's modules (for pages of any origin) and the bare path's page, on a
    port of `host`; answers the server's URL."""
    if not (NOVNC_DIR / "core" / "rfb.js").is_file():
        raise RuntimeError(f"noVNC is missing from {NOVNC_DIR}: run `make setup`")
    server = ""

    async def harness(request: web.Request) -> web.Response:
        return web.Response(text=harness_html(server), content_type="text/html")

    async def allow_any_origin(request: web.Request, response: web.StreamResponse) -> None:
        # The edge path's page (the edge's origin) imports these modules: CORS.
        response.headers["Access-Control-Allow-Origin"] = "*"

    app = web.Application()
    app.on_response_prepare.append(allow_any_origin)
    app.router.add_get(HARNESS_PATH, harness)
    app.router.add_static("/novnc", NOVNC_DIR)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    server = f"http://{host}:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def viewer_browser(chromium: str | None = None) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium or require_binary("chromium", "chromium"),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--no-first-run"],
        )
        try:
            yield browser
        finally:
            await browser.close()


async def edge_page(browser: Browser, edge_url: str, server: str) -> Page:
    """The harness on the edge's origin, noVNC from the bench's `server`.

    A real edge document first (its origin, and its loopback address space:
    Chromium's local network access checks refuse a WebSocket to loopback from
    a page whose address it does not know), then the harness written into it.
    """
    page = await browser.new_page(viewport={"width": 1280, "height": 720})
    await page.add_init_script(INIT_SCRIPT)
    await page.goto(edge_url + "/healthz")
    await page.set_content(harness_html(server))
    await page.wait_for_function("window.bench !== undefined")
    return page


async def bare_page(browser: Browser, server: str) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 720})
    await page.add_init_script(INIT_SCRIPT)
    await page.goto(server + HARNESS_PATH)
    await page.wait_for_function("window.bench !== undefined")
    return page


async def connect(page: Page, url: str, password: str, quality: Quality) -> tuple[int, int]:
    """noVNC on `url` at `quality`; (width, height) once its first frame is drawn."""
    args = json.dumps([url, password, quality.quality, quality.compression])
    frame = await page.evaluate(f"bench.connect(...{args})")
    return int(frame["width"]), int(frame["height"])


async def presses(page: Page, width: int, height: int, count: int) -> list[float]:
    """Seconds from each keydown to the flip that changed the square's centre."""
    x, y = width - MARGIN - SQUARE // 2, height - MARGIN - SQUARE // 2
    samples = []
    for _ in range(count):
        await page.evaluate(f"bench.arm({x}, {y})")
        await page.keyboard.press("a")
        samples.append(float(await page.evaluate("bench.result")) / 1000)
        # As figure 1: decorrelate from the display's update timing.
        await page.wait_for_timeout(random.uniform(20, 50))
    return samples


# noVNC's encoding numbers (core/encodings.js); "7.jpeg" is a Tight rectangle
# sent as JPEG, and so on.
ENCODING_NAMES = {
    "0": "raw",
    "1": "copyrect",
    "5": "hextile",
    "6": "zlib",
    "7": "tight",
    "7.fill": "tight fill",
    "7.jpeg": "tight jpeg",
    "7.basic": "tight basic",
    "16": "zrle",
    "-260": "tightpng",
    "21": "jpeg",
    "50": "h264",
}


async def rectangles(page: Page) -> dict[str, int]:
    """Rectangles noVNC decoded since the last call, by encoding."""
    counts = await page.evaluate("(() => { const r = bench.rects; bench.rects = {}; return r; })()")
    return {ENCODING_NAMES.get(key, key): int(value) for key, value in counts.items()}


def add_counts(total: dict[str, int], more: dict[str, int]) -> None:
    for key, value in more.items():
        total[key] = total.get(key, 0) + value


@contextlib.asynccontextmanager
async def viewer_pages(
    stack: BenchStack, side: ViewerSide = LOCAL
) -> AsyncIterator[tuple[Page, Page]]:
    """A page on the edge's origin and one on the bench's, in one viewer Chromium."""
    async with harness_server(side.host) as server, viewer_browser(side.chromium) as browser:
        yield await edge_page(browser, stack.edge_url, server), await bare_page(browser, server)


@dataclass(frozen=True)
class BothPaths:
    """noVNC through the edge and bare on one session, for alternating measures."""

    stack: BenchStack
    session_id: str
    through_edge: Page
    bare: Page
    bare_url: str
    bare_password: str

    async def each(self, quality: Quality) -> AsyncIterator[tuple[str, Page, tuple[int, int]]]:
        """The edge path, then the bare one: noVNC connected at `quality` on each in
        turn, as (path, page, frame size); disconnected when the caller moves on.
        The edge's stream URL is asked for each time (each is single-use)."""
        for path, page in (("edge", self.through_edge), ("bare", self.bare)):
            if path == "edge":
                url, password = await self.stack.stream_url(self.session_id), ""
            else:
                url, password = self.bare_url, self.bare_password
            size = await connect(page, url, password, quality)
            yield path, page, size
            await page.evaluate("bench.rfb.disconnect()")


@contextlib.asynccontextmanager
async def both_paths(
    stack: BenchStack, session_id: str, side: ViewerSide = LOCAL
) -> AsyncIterator[BothPaths]:
    bare_url, bare_password = await stack.bare_url(session_id)
    async with viewer_pages(stack, side) as (through_edge, bare):
        yield BothPaths(stack, session_id, through_edge, bare, bare_url, bare_password)


async def edge_vs_bare(
    stack: BenchStack,
    session_id: str,
    count: int,
    qualities: tuple[Quality, ...] = QUALITIES,
    side: ViewerSide = LOCAL,
) -> dict[str, Any]:
    """Per quality setting: edge and bare key to pixel in noVNC, and their ratios."""
    result: dict[str, Any] = {}
    async with both_paths(stack, session_id, side) as paths:
        # Not counted: a fresh viewer's first presses (its JavaScript not yet
        # compiled) would otherwise all fall on the path measured first, the edge.
        async for _path, page, size in paths.each(qualities[0]):
            await presses(page, *size, BLOCK)
        for quality in qualities:
            samples: dict[str, list[float]] = {"edge": [], "bare": []}
            rects: dict[str, dict[str, int]] = {"edge": {}, "bare": {}}
            while len(samples["edge"]) < count:
                block = min(BLOCK, count - len(samples["edge"]))
                async for path, page, size in paths.each(quality):
                    await rectangles(page)  # not the first frame's
                    samples[path] += await presses(page, *size, block)
                    add_counts(rects[path], await rectangles(page))
            figures: dict[str, Any] = {
                "quality_level": quality.quality,
                "compression_level": quality.compression,
                "edge": summary_ms(samples["edge"]),
                "bare": summary_ms(samples["bare"]),
                "rectangles": rects,
            }
            figures["ratio_p50"] = ratio(figures["edge"]["p50"], figures["bare"]["p50"])
            figures["ratio_p99"] = ratio(figures["edge"]["p99"], figures["bare"]["p99"])
            result[quality.name] = figures
    return result


async def joins(stack: BenchStack, session_id: str, count: int) -> dict[str, Any]:
    """noVNC joining a running session: through the edge, from the GET of the
    stream URL (in the page, as the live view asks) to the first frame drawn;
    bare, from opening the slot's websockify to the first frame. Alternating.
    Then "watch": a watch-only stream joining while another viewer watches."""
    bare_url, bare_password = await stack.bare_url(session_id)
    default = QUALITIES[0]
    stream_path = f"/api/browser-session/{session_id}/stream"
    samples: dict[str, list[float]] = {"edge": [], "bare": [], "watch": []}
    async with viewer_pages(stack) as (through_edge, bare):
        for _ in range(count):
            args = json.dumps([stream_path, stack.token, default.quality, default.compression])
            samples["edge"].append(
                float(await through_edge.evaluate(f"bench.join(...{args})")) / 1000
            )
            await through_edge.evaluate("bench.rfb.disconnect()")
            args = json.dumps([bare_url, bare_password, default.quality, default.compression])
            frame = await bare.evaluate(f"bench.connect(...{args})")
            samples["bare"].append((float(frame["at"]) - float(frame["started"])) / 1000)
            await bare.evaluate("bench.rfb.disconnect()")
            # Not back to back: a viewer does not join the instant another left.
            await asyncio.sleep(random.uniform(0.05, 0.1))
        # A watch-only viewer (`?watch=true`, docs/stream.md) joining while
        # another watches: the session's feed at the edge is running already.
        env = {**os.environ, "BENCH_TOKEN": stack.token}
        async with viewer_process("bench.watchers", stack.edge_url, session_id, "1", env=env):
            args = json.dumps(
                [f"{stream_path}?watch=true", stack.token, default.quality, default.compression]
            )
            for _ in range(count):
                watch = float(await through_edge.evaluate(f"bench.join(...{args})")) / 1000
                samples["watch"].append(watch)
                await through_edge.evaluate("bench.rfb.disconnect()")
                await asyncio.sleep(random.uniform(0.05, 0.1))
    result: dict[str, Any] = {path: summary_ms(values) for path, values in samples.items()}
    result["ratio_p50"] = ratio(result["edge"]["p50"], result["bare"]["p50"])
    return result


async def scroll_traffic(
    stack: BenchStack,
    session_id: str,
    repeats: int,
    qualities: tuple[Quality, ...] = QUALITIES,
    side: ViewerSide = LOCAL,
) -> dict[str, Any]:
    """Per quality setting: bytes and frames per second noVNC receives while the
    session's page (bench/key_page.py, SCROLL_PAGE) scrolls, edge and bare in
    alternation. Each window starts at the `s` key and lasts the page's scroll
    (SCROLL_S), plus a second for what is still on its way."""
    result: dict[str, Any] = {}
    async with both_paths(stack, session_id, side) as paths:
        for quality in qualities:
            sums = {path: {"bytes": 0.0, "flips": 0.0} for path in ("edge", "bare")}
            for _ in range(repeats):
                async for path, page, _size in paths.each(quality):
                    before = await page.evaluate("bench.traffic()")
                    await page.keyboard.press("s")
                    await page.wait_for_timeout(SCROLL_S * 1000 + 1000)
                    after = await page.evaluate("bench.traffic()")
                    for key in ("bytes", "flips"):
                        sums[path][key] += float(after[key]) - float(before[key])
            seconds = repeats * SCROLL_S
            figures: dict[str, Any] = {
                path: {
                    "kbytes_per_s": round(sums[path]["bytes"] / seconds / 1000, 1),
                    "frames_per_s": round(sums[path]["flips"] / seconds, 1),
                }
                for path in ("edge", "bare")
            }
            for key in ("kbytes_per_s", "frames_per_s"):
                figures[f"ratio_{key}"] = ratio(figures["edge"][key], figures["bare"][key])
            result[quality.name] = figures
    return result
