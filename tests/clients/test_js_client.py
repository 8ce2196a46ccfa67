"""The <baton-live-view> element of clients/js on a page of another origin, in a
real Chromium: it watches a session, takes control, types into the live page,
returns control, fires its DOM events, and asks for a fresh stream URL when its
stream WebSocket is killed.

The page imports the package from the edge (/assets/clients/baton.js) from a
loopback port of its own, listed in BATON_CORS_ORIGINS. Real Xvnc, websockify,
Chromium and all four services under the edge (tests/edge/full_stack.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Page, Request, expect

from services.display.settings import NumberRange
from tests.edge.full_stack import COLOUR_RGB, FullStack, full_stack
from tests.edge.harness import user_token
from tests.edge.test_embed import waiting_session
from tests.edge.test_full_stack import console_page

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALICE = user_token("alice")
# This file's own displays and VNC ports (apart from every other test's).
DISPLAYS = NumberRange(2600, 2604)
VNC_PORTS = NumberRange(22600, 22604)

# Someone else's app, as clients/js/README.md shows it: the element, its
# attributes and a token provider; every DOM event it fires is recorded.
HOST_PAGE = """<!doctype html>
<html><head><title>host app</title>
<style>body { margin: 0; } baton-live-view { width: 800px; }</style>
</head><body>
<baton-live-view id="view"></baton-live-view>
<script type="module">
const params = new URLSearchParams(location.search);
const edge = params.get("edge");
const token = new URLSearchParams(location.hash.slice(1)).get("token");
window.batonEvents = [];
window.tokenCalls = 0;
await import(`${edge}/assets/clients/baton.js`);
const view = document.getElementById("view");
for (const type of ["baton-connection-change", "baton-control-change", "baton-error"]) {
  view.addEventListener(type, (event) => {
    const {session, ...detail} = event.detail;
    window.batonEvents.push({type, ...detail});
  });
}
view.tokenProvider = async () => {
  window.tokenCalls += 1;
  return token;
};
view.setAttribute("edge-url", edge);
view.setAttribute("session-id", params.get("session"));
</script>
</body></html>
"""


async def _host_page(request: web.Request) -> web.Response:
    return web.Response(text=HOST_PAGE, content_type="text/html")


@contextlib.asynccontextmanager
async def host_site() -> AsyncIterator[str]:
    """The host page's origin, http://127.0.0.1:<a port of its own>."""
    app = web.Application()
    app.router.add_get("/", _host_page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


class EdgeLink:
    """A loopback TCP relay in front of the edge, as a network between the
    browser and the edge: `drop_streams` cuts the stream WebSockets' TCP
    connections the way a dropped network does (the page sees 1006)."""

    def __init__(self, edge_port: int) -> None:
        self.edge_port = edge_port
        self.port = 0
        self.streams: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def drop_streams(self) -> int:
        dropped = 0
        for writer in self.streams:
            if not writer.is_closing():
                writer.transport.abort()
                dropped += 1
        return dropped

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.edge_port
        )
        try:
            head = await reader.readline()
            if b"/stream/ws?" in head:
                self.streams.append(writer)
            upstream_writer.write(head)
            await asyncio.gather(
                self._pump(reader, upstream_writer), self._pump(upstream_reader, writer)
            )
        finally:
            for end in (writer, upstream_writer):
                end.transport.abort()
            self._tasks.discard(task)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        # One side gone: the other goes too (what a dropped network looks like).
        writer.transport.abort()


class Host:
    def __init__(self, stack: FullStack, origin: str, link: EdgeLink) -> None:
        self.stack = stack
        self.origin = origin
        self.link = link

    def url(self, session_id: str, edge: str | None = None) -> str:
        query = urlencode({"edge": edge or self.stack.url, "session": session_id})
        return f"{self.origin}/?{query}#token={quote(ALICE)}"

    @property
    def linked_edge(self) -> str:
        """The edge through the relay (the stream URLs the edge makes follow Host)."""
        return f"http://127.0.0.1:{self.link.port}"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def host(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Host]:
    async with (
        host_site() as origin,
        full_stack(
            tmp_path_factory.mktemp("js-client-e2e"), DISPLAYS, VNC_PORTS, cors_origins=(origin,)
        ) as stack,
    ):
        link = EdgeLink(int(stack.url.rsplit(":", 1)[1]))
        await link.start()
        try:
            yield Host(stack, origin, link)
        finally:
            await link.stop()


# Below and left of the middle, where the mouse pointer is not.
PAGE_PIXEL = """() => {
  const canvas = document.querySelector('baton-live-view').shadowRoot.querySelector('canvas');
  if (!canvas || !canvas.width) return null;
  const x = Math.floor(canvas.width / 4), y = Math.floor(canvas.height * 3 / 4);
  return Array.from(canvas.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3));
}"""


async def wait_for_page_colour(page: Page, colour: tuple[int, int, int]) -> None:
    """Until the element's canvas shows `colour` (20 s at most)."""
    pixel = None
    for _ in range(100):
        pixel = await page.evaluate(PAGE_PIXEL)
        if pixel and all(abs(a - b) <= 8 for a, b in zip(pixel, colour, strict=True)):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the live view shows {pixel}, not {colour}")


async def recorded(page: Page, event_type: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = await page.evaluate("window.batonEvents")
    return [event for event in events if event["type"] == event_type]


def stream_url_requests(page: Page) -> list[str]:
    """Every GET of the session's stream URL the page makes, as it makes them."""
    seen: list[str] = []

    def on_request(request: Request) -> None:
        if request.method == "GET" and re.search(
            r"/api/browser-session/[^/]+/stream$", request.url
        ):
            seen.append(request.url)

    page.on("request", on_request)
    return seen


async def test_the_element_watches_and_fetches_a_fresh_stream_url_on_reconnect(
    host: Host,
) -> None:
    stack = host.stack
    session_id = await waiting_session(
        stack, stack.site.colour_url, [{"action": "request_user", "reason": "look"}]
    )
    async with console_page(stack) as page:
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        fetched = stream_url_requests(page)
        await page.goto(host.url(session_id, host.linked_edge))
        view = page.locator("baton-live-view")
        await expect(view.locator(".status")).to_have_text("connected")
        await expect(view.locator(".control")).to_have_text("AI")
        await wait_for_page_colour(page, COLOUR_RGB)
        # Scaled into the element's box, not cropped by it.
        box = await view.locator("canvas").bounding_box()
        assert box is not None and box["width"] <= 800
        assert len(fetched) == 1 and len(host.link.streams) == 1
        tokens_before = await page.evaluate("window.tokenCalls")

        # The network drops the stream (1006): the element asks for a new
        # stream URL, with a token from its provider, and shows the page again.
        assert host.link.drop_streams() == 1
        await expect(view.locator(".status")).to_have_text("reconnecting")
        await expect(view.locator(".status")).to_have_text("connected")
        assert len(fetched) == 2 and len(host.link.streams) == 2
        assert fetched[0] == fetched[1]
        assert await page.evaluate("window.tokenCalls") > tokens_before
        await wait_for_page_colour(page, COLOUR_RGB)
        statuses = [
            (e["status"], e["code"]) for e in await recorded(page, "baton-connection-change")
        ]
        assert statuses == [
            ("connecting", None),
            ("connected", None),
            ("reconnecting", 1006),
            ("connected", None),
        ]

        # The session ending: the stream closes for good (1000) and the control
        # state says so.
        await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)
        await expect(view.locator(".control")).to_have_text("Ended")
        await expect(view.locator(".status")).to_have_text("disconnected (1000)")
        controls = [e["state"] for e in await recorded(page, "baton-control-change")]
        assert controls == ["AI_CONTROL", "ENDED"]
        assert await recorded(page, "baton-error") == []
        assert errors == []


async def test_the_element_takes_control_types_and_returns_it(host: Host) -> None:
    stack = host.stack
    session_id = await waiting_session(
        stack,
        stack.site.form_url,
        [{"action": "request_user", "reason": "type"}, {"action": "click", "selector": "#finish"}],
    )
    async with console_page(stack) as page:
        await page.goto(host.url(session_id))
        view = page.locator("baton-live-view")
        await expect(view.locator(".status")).to_have_text("connected")
        await expect(view.locator(".control")).to_have_text("AI")
        await expect(view.locator(".return")).to_be_disabled()

        await view.locator(".take").click()
        await expect(view.locator(".control")).to_have_text("You")
        await expect(view.locator(".return")).to_be_enabled()
        await view.locator("canvas").click()
        await page.keyboard.type("embed")
        await stack.site.wait_until(lambda: len(stack.site.keys()) >= 5)
        assert stack.site.keys() == "embed"

        await view.locator(".return").click()
        await expect(view.locator(".control")).not_to_have_text("You")
        # The agent carries on with its last step once it has control back.
        await stack.site.wait_until(stack.site.finished)
        changes = [
            (e["state"], e["controllerUserId"], e["mine"], e["takenBack"])
            for e in await recorded(page, "baton-control-change")
        ]
        assert changes[:3] == [
            ("AI_CONTROL", None, False, False),
            ("USER_CONTROL", "alice", True, False),
            ("AI_CONTROL", None, False, False),
        ]
        assert await recorded(page, "baton-error") == []
    await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)


async def connections(page: Page) -> list[dict[str, Any]]:
    """The element's connection changes to "connected" so far."""
    changes = await recorded(page, "baton-connection-change")
    return [change for change in changes if change["status"] == "connected"]


async def test_a_view_only_element_watches_and_takes_its_own_stream_to_control(
    host: Host,
) -> None:
    stack = host.stack
    session_id = await waiting_session(
        stack, stack.site.form_url, [{"action": "request_user", "reason": "type"}]
    )
    await stack.request(
        "PUT", f"/api/browser-session/{session_id}/control", ALICE, {"action": "take_control"}
    )
    async with console_page(stack) as page:
        await page.goto(host.url(session_id))
        view = page.locator("baton-live-view")
        await expect(view.locator(".status")).to_have_text("connected")
        assert await stack.metric("baton_stream_feeds") == 0
        # View-only, then a new connection (another edge URL): it watches, from
        # the session's feed, and sends nothing although alice holds control.
        await page.evaluate("document.getElementById('view').setAttribute('view-only', '')")
        await page.evaluate(
            f"document.getElementById('view').setAttribute('edge-url', {host.linked_edge!r})"
        )
        await expect(view.locator(".status")).to_have_text("connected")
        await stack.wait_for_metric("baton_stream_feeds", 1)
        await view.locator("canvas").click()
        await page.keyboard.type("no")
        # No longer view-only: a stream of its own, whose input reaches the page.
        connected = len(await connections(page))
        await page.evaluate("document.getElementById('view').removeAttribute('view-only')")
        for _ in range(100):
            if len(await connections(page)) > connected:
                break
            await asyncio.sleep(0.05)
        await stack.wait_for_metric("baton_stream_feeds", 0)
        await view.locator("canvas").click()
        await page.keyboard.type("ok")
        await stack.site.wait_until(lambda: len(stack.site.keys()) >= 2)
        assert stack.site.keys() == "ok"
    await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)
