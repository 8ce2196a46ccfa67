"""The page every figure looks at, served by the bench on loopback.

A square near the bottom-right corner changes colour on every key press (away
from the pointer, which x11vnc draws into the framebuffer), and each `u` key
(the bench's "user" key) is reported back with its arrival time here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

SQUARE = 96
# Distance of the square from the bottom-right corner of the page.
MARGIN = 40
# Colour of the square before any key; the start figure waits for it.
LOADED_RGB = (20, 110, 220)
COLOURS = ("rgb(220,40,40)", "rgb(40,180,60)", "rgb(240,200,20)", "rgb(20,110,220)")

PAGE = f"""<!doctype html>
<html><head><title>Baton bench</title></head>
<body style="margin:0;background:#fff;overflow:hidden">
<div id="sq" style="position:fixed;right:{MARGIN}px;bottom:{MARGIN}px;
 width:{SQUARE}px;height:{SQUARE}px;background:rgb{LOADED_RGB}"></div>
<script>
const colours = {list(COLOURS)!r};
const square = document.getElementById("sq");
let presses = 0;
document.addEventListener("keydown", (e) => {{
  square.style.background = colours[presses++ % colours.length];
  if (e.key === "u") fetch("/user-key", {{method: "POST", keepalive: true}});
}});
// Where a start's time goes (figure 2): the page's navigation, its load and the
// start of the frame after its first (epoch ms), reported once painted.
addEventListener("load", () => requestAnimationFrame(() => requestAnimationFrame(() => {{
  const nav = performance.getEntriesByType("navigation")[0];
  const at = (ms) => performance.timeOrigin + ms;
  fetch("/painted", {{method: "POST", body: JSON.stringify({{
    navigation_start: at(0), load: at(nav.loadEventEnd), frame: at(performance.now())}})}});
}})));
</script>
</body></html>
"""


# Figure 2.2's page: the key page's square over a long striped page that scrolls
# itself, 8 px every 16 ms, for SCROLL_S after each `s` key.
SCROLL_S = 3.0
SCROLL_PAGE = PAGE.replace("overflow:hidden", "overflow:auto").replace(
    "</body>",
    """<div style="height:400000px;
 background:repeating-linear-gradient(#fff 0 24px,#9ab 24px 48px)"></div>
<script>
let scrolling = null;
document.addEventListener("keydown", (e) => {
  if (e.key !== "s" || scrolling !== null) return;
  scrolling = setInterval(() => window.scrollBy(0, 8), 16);
  setTimeout(() => { clearInterval(scrolling); scrolling = null; }, SCROLL_MS);
});
</script>
</body>""".replace("SCROLL_MS", str(int(SCROLL_S * 1000))),
)

# What the busy agents of the load figure work on: a long page to scroll and a
# text box to type into.
BUSY_PAGE = """<!doctype html>
<html><head><title>Baton bench, busy</title></head>
<body style="margin:0;font:16px sans-serif">
<textarea id="t" style="width:90%;height:120px"></textarea>
<div style="height:20000px;background:repeating-linear-gradient(#fff 0 40px,#cde 40px 80px)"></div>
</body></html>
"""


def square_centre(width: int, height: int) -> tuple[int, int]:
    """Screen position of the square's centre for a Chromium window filling the screen."""
    return width - MARGIN - SQUARE // 2, height - MARGIN - SQUARE // 2


@dataclass
class KeyPage:
    url: str = ""
    user_keys: list[float] = field(default_factory=list)
    # Each load's report: epoch seconds of its navigation start, load and frame.
    painted: list[dict[str, float]] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def next_user_key(self, after: int) -> float:
        """perf_counter time of user key number `after` (0-based) once it has arrived."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.user_keys) > after)
        return self.user_keys[after]

    async def next_painted(self, after: int) -> dict[str, float]:
        """Load report number `after` (0-based) once it has arrived."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.painted) > after)
        return self.painted[after]

    async def _painted(self, request: web.Request) -> web.Response:
        report = await request.json(loads=json.loads)
        async with self._changed:
            self.painted.append({name: float(ms) / 1000 for name, ms in report.items()})
            self._changed.notify_all()
        return web.Response(status=204)

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def _scroll(self, request: web.Request) -> web.Response:
        return web.Response(text=SCROLL_PAGE, content_type="text/html")

    async def _busy(self, request: web.Request) -> web.Response:
        return web.Response(text=BUSY_PAGE, content_type="text/html")

    async def _user_key(self, request: web.Request) -> web.Response:
        arrived = time.perf_counter()
        async with self._changed:
            self.user_keys.append(arrived)
            self._changed.notify_all()
        return web.Response(status=204)


@contextlib.asynccontextmanager
async def key_page() -> AsyncIterator[KeyPage]:
    page = KeyPage()
    app = web.Application()
    app.router.add_get("/", page._page)
    app.router.add_get("/busy", page._busy)
    app.router.add_get("/scroll", page._scroll)
    app.router.add_post("/user-key", page._user_key)
    app.router.add_post("/painted", page._painted)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    page.url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    try:
        yield page
    finally:
        await runner.cleanup()
