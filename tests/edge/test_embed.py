"""Embedding the live view in a page of another origin, in a real Chromium.

A host page on a loopback port of its own (another origin) is listed in
BATON_CORS_ORIGINS; a second one is not. Real Xvnc, websockify, Chromium and
all four services under the edge (tests/edge/full_stack.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Frame, Page, expect

from services.display.settings import NumberRange
from tests.edge.full_stack import COLOUR_RGB, FullStack, full_stack
from tests.edge.harness import user_token
from tests.edge.test_full_stack import console_page

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALICE = user_token("alice")
# This file's own displays and VNC ports (apart from every other test's).
DISPLAYS = NumberRange(2400, 2404)
VNC_PORTS = NumberRange(22400, 22404)


async def _host_page(request: web.Request) -> web.Response:
    """A page of someone else's app framing each `src` it is given."""
    frames = "".join(
        f'<iframe src="{html.escape(src)}" style="width: 760px; height: 520px"></iframe>'
        for src in request.query.getall("src", [])
    )
    page = f"<!doctype html><html><head><title>host</title></head><body>{frames}</body></html>"
    return web.Response(text=page, content_type="text/html")


@contextlib.asynccontextmanager
async def host_site() -> AsyncIterator[str]:
    """A host page's origin, http://127.0.0.1:<a port of its own>."""
    app = web.Application()
    app.router.add_get("/", _host_page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


class Embedding:
    def __init__(self, stack: FullStack, listed: str, unlisted: str) -> None:
        self.stack = stack
        self.listed = listed
        self.unlisted = unlisted

    def embed_url(self, session_id: str, control: bool = False) -> str:
        query = "?control=1" if control else ""
        return f"{self.stack.url}/embed/{session_id}{query}#token={quote(ALICE)}"

    @staticmethod
    def host_url(origin: str, *frames: str) -> str:
        return f"{origin}/?{urlencode([('src', src) for src in frames])}"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def embedding(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Embedding]:
    async with (
        host_site() as listed,
        host_site() as unlisted,
        full_stack(
            tmp_path_factory.mktemp("embed-e2e"), DISPLAYS, VNC_PORTS, cors_origins=(listed,)
        ) as stack,
    ):
        yield Embedding(stack, listed, unlisted)


async def waiting_session(stack: FullStack, url: str, steps: list[dict[str, str]]) -> str:
    """A session whose agent opened `url` and waits for a person."""
    created = await stack.request(
        "POST", "/api/browser-session", ALICE, {"task": "embed", "url": url, "steps": steps}
    )
    session = await stack.wait_for_session(
        ALICE, created["id"], lambda s: s["task"]["status"] == "WAITING_FOR_USER"
    )
    session_id: str = session["id"]
    return session_id


def frame_of(page: Page, index: int) -> Frame:
    frames = [frame for frame in page.frames if frame != page.main_frame]
    return frames[index]


# Below and left of the middle, where the mouse pointer is not.
PAGE_PIXEL = """() => {
  const canvas = document.querySelector('#screen').shadowRoot.querySelector('canvas');
  if (!canvas || !canvas.width) return null;
  const x = Math.floor(canvas.width / 4), y = Math.floor(canvas.height * 3 / 4);
  return Array.from(canvas.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3));
}"""


async def wait_for_page_colour(frame: Frame, colour: tuple[int, int, int]) -> None:
    """Until the live view's canvas shows `colour` (20 s at most)."""
    pixel = None
    for _ in range(100):
        pixel = await frame.evaluate(PAGE_PIXEL)
        if pixel and all(abs(a - b) <= 8 for a, b in zip(pixel, colour, strict=True)):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the live view shows {pixel} , not {colour}")


async def test_an_embed_on_a_listed_origin_shows_the_live_page(embedding: Embedding) -> None:
    stack = embedding.stack
    session_id = await waiting_session(
        stack, stack.site.colour_url, [{"action": "request_user", "reason": "look"}]
    )
    async with console_page(stack) as page:
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(embedding.host_url(embedding.listed, embedding.embed_url(session_id)))
        embed = page.frame_locator("iframe")
        await expect(embed.locator("#view-status")).to_have_text("connected")
        await expect(embed.locator("#controller-indicator")).to_have_text("AI")
        # View-only by default: no control is offered.
        await expect(embed.locator("#take-button")).to_be_hidden()
        await wait_for_page_colour(frame_of(page, 0), COLOUR_RGB)
        # The view is scaled into the frame, not cropped by it.
        box = await embed.locator("#screen canvas").bounding_box()
        assert box is not None and box["width"] <= 760 and box["height"] <= 520

        # Control changes show in the embed as they happen.
        await stack.request(
            "PUT",
            f"/api/browser-session/{session_id}/control",
            ALICE,
            {"action": "take_control"},
        )
        await expect(embed.locator("#controller-indicator")).to_have_text("You")
        await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)
        await expect(embed.locator("#controller-indicator")).to_contain_text("Ended")
        assert errors == []


async def test_an_embed_with_control_takes_control_types_and_returns_it(
    embedding: Embedding,
) -> None:
    stack = embedding.stack
    session_id = await waiting_session(
        stack,
        stack.site.form_url,
        [{"action": "request_user", "reason": "type"}, {"action": "click", "selector": "#finish"}],
    )
    async with console_page(stack) as page:
        url = embedding.embed_url(session_id, control=True)
        await page.goto(embedding.host_url(embedding.listed, url))
        embed = page.frame_locator("iframe")
        await expect(embed.locator("#view-status")).to_have_text("connected")
        await embed.locator("#take-button").click()
        await expect(embed.locator("#controller-indicator")).to_have_text("You")
        await expect(embed.locator("#return-button")).to_be_enabled()
        await embed.locator("#screen canvas").click()
        await page.keyboard.type("embed")
        await stack.site.wait_until(lambda: len(stack.site.keys()) >= 5)
        assert stack.site.keys() == "embed"

        await embed.locator("#return-button").click()
        await expect(embed.locator("#controller-indicator")).to_have_text("AI")
        # The agent carries on with its last step once it has control back.
        await stack.site.wait_until(stack.site.finished)
    await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)


async def test_a_view_only_embed_sends_no_input_even_for_the_controller(
    embedding: Embedding,
) -> None:
    """alice holds control, so the edge would pass her input: the view-only embed
    sends none. The positive marker: her keys from a ?control=1 embed, typed
    after, reach the page, alone."""
    stack = embedding.stack
    session_id = await waiting_session(
        stack, stack.site.form_url, [{"action": "request_user", "reason": "type"}]
    )
    await stack.request(
        "PUT", f"/api/browser-session/{session_id}/control", ALICE, {"action": "take_control"}
    )
    async with console_page(stack) as page:
        view_only = embedding.embed_url(session_id)
        controlling = embedding.embed_url(session_id, control=True)
        await page.goto(embedding.host_url(embedding.listed, view_only, controlling))
        watching, typing = page.frame_locator("iframe").nth(0), page.frame_locator("iframe").nth(1)
        for embed in (watching, typing):
            await expect(embed.locator("#view-status")).to_have_text("connected")
            await expect(embed.locator("#controller-indicator")).to_have_text("You")
        await expect(typing.locator("#screen")).to_have_class("embed-screen interactive")
        await expect(watching.locator("#screen")).to_have_class("embed-screen")
        # The view-only embed watches: its stream is served from the session's feed
        # (counted once the edge has read its encodings, which may follow "connected").
        await stack.wait_for_metric("baton_stream_feeds", 1)

        await watching.locator("#screen canvas").click()
        await page.keyboard.type("no")
        await typing.locator("#screen canvas").click()
        await page.keyboard.type("ok")
        await stack.site.wait_until(lambda: len(stack.site.keys()) >= 2)
        assert stack.site.keys() == "ok"
    await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)


FETCH_SESSION = """async ([url, token]) => {
  try {
    const response = await fetch(url, {headers: {Authorization: `Bearer ${token}`}});
    return `${response.status} ${(await response.json()).id}`;
  } catch (error) {
    return `refused: ${error.message}`;
  }
}"""

IMPORT_MODULES = """async (edge) => {
  try {
    const client = await import(`${edge}/assets/clients/baton.js`);
    const badge = await import(`${edge}/console/control_badge.js`);
    return `${typeof client.BatonClient} ${typeof badge.showController}`;
  } catch (error) {
    return `refused: ${error.message}`;
  }
}"""


async def test_only_a_listed_origin_may_call_rest_import_assets_and_frame_embed(
    embedding: Embedding,
) -> None:
    stack = embedding.stack
    session_id = await waiting_session(
        stack, stack.site.colour_url, [{"action": "request_user", "reason": "look"}]
    )
    session_url = f"{stack.url}/api/browser-session/{session_id}"
    embed = embedding.embed_url(session_id)
    async with console_page(stack) as page:
        answers: dict[str, dict[str, Any]] = {}
        for name, origin in [("listed", embedding.listed), ("unlisted", embedding.unlisted)]:
            await page.goto(embedding.host_url(origin, embed))
            frame = frame_of(page, 0)
            # The embed loaded, or Chromium put its error page in the frame.
            await expect(page.frame_locator("iframe").locator("body")).to_be_attached()
            answers[name] = {
                "rest": await page.evaluate(FETCH_SESSION, [session_url, ALICE]),
                "modules": await page.evaluate(IMPORT_MODULES, stack.url),
                "framed": await frame.locator("#view-status").count() == 1,
            }
    assert answers["listed"] == {
        "rest": f"200 {session_id}",
        "modules": "function function",
        "framed": True,
    }
    assert answers["unlisted"]["rest"] == "refused: Failed to fetch"
    assert answers["unlisted"]["modules"].startswith("refused:")
    assert answers["unlisted"]["framed"] is False
    await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)
