"""Figure 2.1 (issue 16, figure 1): key to pixel through a real viewer.

noVNC (the build the edge serves under /vendor/novnc) in a headless Chromium
driven by Playwright: a key pressed into noVNC's canvas, timed inside the page
from the keydown to the moment noVNC draws the changed square onto its visible
canvas. noVNC negotiates what it always does (Tight with JPEG, at its default
quality or at the live view's quality settings); the edge's stream and the slot's
own websockify are measured in alternating blocks, as in figure 1.

The harness page must come from the edge's origin for the edge path (the edge
refuses stream WebSockets from other origins: services/edge/origins.py), so it
is written into a document the edge served; noVNC itself is loaded from the
edge. For the bare path the bench serves the same harness and
the same noVNC files on its own loopback server. See bench/README.md, "Second
round", for the method and its resolution.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from bench.key_page import MARGIN, SQUARE
from bench.latency import BLOCK
from bench.stack import BenchStack
from bench.stats import ratio, summary_ms
from services.edge.settings import EdgeSettings
from services.runtime.processes import require_binary

HARNESS_PATH = "/bench/novnc-viewer.html"
PRESS_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_MS = 20000


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
# for both paths). Then the harness: connect, and time keydown -> changed pixel
# at the moment noVNC's Display.flip() draws onto the visible canvas.
INIT_SCRIPT = """
const getContext = HTMLCanvasElement.prototype.getContext;
HTMLCanvasElement.prototype.getContext = function (kind, options) {
  if (kind === "2d") options = { ...(options || {}), willReadFrequently: true };
  return getContext.call(this, kind, options);
};
"""

HARNESS = f"""<!doctype html>
<html><head><title>Baton bench: noVNC</title></head>
<body style="margin:0;background:#222">
<div id="screen"></div>
<script type="module">
import RFB from "/vendor/novnc/core/rfb.js";
const bench = (window.bench = {{
  rfb: null, armed: null, flips: 0,
  connect(url, password, quality, compression) {{
    if (bench.rfb) bench.rfb.disconnect();
    const rfb = new RFB(document.getElementById("screen"), url, {{
      shared: true, credentials: {{ password }}, wsProtocols: ["binary"],
    }});
    rfb.qualityLevel = quality;
    rfb.compressionLevel = compression;
    bench.rfb = rfb;
    const display = rfb._display;
    const flip = display.flip.bind(display);
    display.flip = (fromQueue) => {{
      flip(fromQueue);
      bench.flips += 1;
      const armed = bench.armed;
      // A flip with a render queue pending only queues itself: not drawn yet.
      if (!armed || armed.down === null || (display._renderQ.length && !fromQueue)) return;
      if (bench.pixel(armed.x, armed.y) !== armed.before) {{
        bench.armed = null;
        armed.resolve(performance.now() - armed.down);
      }}
    }};
    return new Promise((resolve, reject) => {{
      const timer = setTimeout(() => reject(new Error("no first frame")), {CONNECT_TIMEOUT_MS});
      rfb.addEventListener("disconnect", (e) => reject(new Error("disconnected: " + e.detail.clean)));
      rfb.addEventListener("securityfailure", (e) => reject(new Error("refused: " + e.detail.reason)));
      rfb.addEventListener("connect", () => {{
        const seen = bench.flips;
        const wait = () => {{
          if (bench.flips > seen) {{ clearTimeout(timer); rfb.focus(); resolve([display.width, display.height]); }}
          else setTimeout(wait, 5);
        }};
        wait();
      }});
    }});
  }},
  pixel(x, y) {{
    return Array.from(bench.rfb._display._targetCtx.getImageData(x, y, 1, 1).data.slice(0, 3)).join(",");
  }},
  arm(x, y) {{
    let resolve;
    const done = new Promise((r) => (resolve = r));
    bench.armed = {{ x, y, before: bench.pixel(x, y), down: null, resolve }};
    bench.result = Promise.race([
      done,
      new Promise((_, reject) => setTimeout(() => reject(new Error("no change")), {PRESS_TIMEOUT_MS})),
    ]);
  }},
}});
// Capture phase on window: before noVNC's own keydown handler sends the key.
window.addEventListener("keydown", () => {{
  if (bench.armed && bench.armed.down === null) bench.armed.down = performance.now();
}}, true);
</script>
</body></html>
"""


def novnc_dir() -> Path:
    """Where the edge serves noVNC from (the same build for both paths): its default."""
    default = next(f.default for f in dataclasses.fields(EdgeSettings) if f.name == "novnc_dir")
    assert isinstance(default, Path)
    return default


@contextlib.asynccontextmanager
async def harness_server() -> AsyncIterator[str]:
    """The bare path's page: the harness and noVNC's files on a loopback port."""

    async def harness(request: web.Request) -> web.Response:
        return web.Response(text=HARNESS, content_type="text/html")

    app = web.Application()
    app.router.add_get(HARNESS_PATH, harness)
    app.router.add_static("/vendor/novnc", novnc_dir())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}{HARNESS_PATH}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def viewer_browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=require_binary("chromium", "chromium"),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--no-first-run"],
        )
        try:
            yield browser
        finally:
            await browser.close()


async def edge_page(browser: Browser, edge_url: str) -> Page:
    """The harness on the edge's origin; noVNC from the edge's /vendor/novnc.

    A real edge document first (its origin, and its loopback address space:
    Chromium's local network access checks refuse a WebSocket to loopback from
    a page whose address it does not know), then the harness written into it.
    """
    page = await browser.new_page(viewport={"width": 1280, "height": 720})
    await page.add_init_script(INIT_SCRIPT)
    await page.goto(edge_url + "/healthz")
    await page.set_content(HARNESS)
    await page.wait_for_function("window.bench !== undefined")
    return page


async def bare_page(browser: Browser, harness_url: str) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 720})
    await page.add_init_script(INIT_SCRIPT)
    await page.goto(harness_url)
    await page.wait_for_function("window.bench !== undefined")
    return page


async def connect(page: Page, url: str, password: str, quality: Quality) -> tuple[int, int]:
    """noVNC on `url` at `quality`; (width, height) once its first frame is drawn."""
    args = json.dumps([url, password, quality.quality, quality.compression])
    width, height = await page.evaluate(f"bench.connect(...{args})")
    return int(width), int(height)


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


async def edge_vs_bare(
    stack: BenchStack, session_id: str, count: int, qualities: tuple[Quality, ...] = QUALITIES
) -> dict[str, Any]:
    """Per quality setting: edge and bare key to pixel in noVNC, and their ratios."""
    bare_url, bare_password = await stack.bare_url(session_id)
    result: dict[str, Any] = {}
    async with harness_server() as harness_url, viewer_browser() as browser:
        through_edge = await edge_page(browser, stack.edge_url)
        bare = await bare_page(browser, harness_url)
        for quality in qualities:
            samples: dict[str, list[float]] = {"edge": [], "bare": []}
            while len(samples["edge"]) < count:
                block = min(BLOCK, count - len(samples["edge"]))
                url = await stack.stream_url(session_id)
                size = await connect(through_edge, url, "", quality)
                samples["edge"] += await presses(through_edge, *size, block)
                await through_edge.evaluate("bench.rfb.disconnect()")
                size = await connect(bare, bare_url, bare_password, quality)
                samples["bare"] += await presses(bare, *size, block)
                await bare.evaluate("bench.rfb.disconnect()")
            figures: dict[str, Any] = {
                "quality_level": quality.quality,
                "compression_level": quality.compression,
                "edge": summary_ms(samples["edge"]),
                "bare": summary_ms(samples["bare"]),
            }
            figures["ratio_p50"] = ratio(figures["edge"]["p50"], figures["bare"]["p50"])
            figures["ratio_p99"] = ratio(figures["edge"]["p99"], figures["bare"]["p99"])
            result[quality.name] = figures
    return result
