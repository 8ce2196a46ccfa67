"""Watch-only streams end to end: real Xvnc, websockify, Chromium, all four services.

Watchers of a session share one upstream connection (services/edge/stream_feed.py):
the VNC server sees one client for any number of them, each sees the live
screen exactly, one joining mid-stream decodes from its first message, and
nothing a watcher sends reaches the page (while the same user's own stream does).
Tight is decoded here (lossless: no JPEG quality asked for) to prove the edge's
re-compressed zlib rectangles decode from any message boundary.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import pytest_asyncio
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from baton.client import ApiError
from services.display.rfb_client import BGRX32, RfbClient, RfbError, WebSocketChannel
from services.display.settings import NumberRange
from services.edge.rfb_filter import key_event, pointer_event
from services.edge.rfb_updates import CURSOR, FRAMEBUFFER_UPDATE, LAST_RECT, RAW, TIGHT
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.harness import user_token
from tests.edge.test_full_stack import RawViewer, raw_viewer, start_form_task, stream_url

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALICE = user_token("alice")
UPDATE_TIMEOUT_S = 10.0
TAB = (0xFF09,)
SHIFT_TAB = (0xFFE1, 0xFF09)
COPY_RECT = 1


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FullStack]:
    async with full_stack(
        tmp_path_factory.mktemp("watch"),
        displays=NumberRange(3500, 3503),
        vnc_ports=NumberRange(23500, 23503),
    ) as running:
        yield running


class Watcher:
    """A watch-only viewer decoding what the feed pushes (Raw or lossless Tight)."""

    def __init__(self, client: RfbClient, width: int, height: int) -> None:
        self.client = client
        self.width, self.height = width, height
        self.pixels = bytearray(width * height * 4)
        self.covered = bytearray(width * height)
        self.inflaters = [zlib.decompressobj() for _ in range(4)]

    async def read(self, size: int) -> bytes:
        return await self.client._read(size)

    async def next_update(self) -> None:
        kind = (await self.read(1))[0]
        assert kind == FRAMEBUFFER_UPDATE, f"server message {kind}"
        (count,) = struct.unpack(">xH", await self.read(3))
        for _ in range(count):
            x, y, w, h, encoding = struct.unpack(">HHHHi", await self.read(12))
            if encoding == LAST_RECT:
                break
            if encoding == CURSOR:
                await self.read(w * h * 4 + (w + 7) // 8 * h)
                continue
            if encoding == RAW:
                self.paint(x, y, w, h, await self.read(w * h * 4))
            elif encoding == COPY_RECT:
                sx, sy = struct.unpack(">HH", await self.read(4))
                rows = [self.row(sx, sy + r, w) for r in range(h)]
                for r, row in enumerate(rows):
                    self.paint(x, y + r, w, 1, row)
            elif encoding == TIGHT:
                await self.tight(x, y, w, h)
            else:
                raise AssertionError(f"encoding {encoding}")

    def row(self, x: int, y: int, w: int) -> bytes:
        start = (y * self.width + x) * 4
        return bytes(self.pixels[start : start + w * 4])

    def paint(self, x: int, y: int, w: int, h: int, bgrx: bytes) -> None:
        for r in range(h):
            start = ((y + r) * self.width + x) * 4
            self.pixels[start : start + w * 4] = bgrx[r * w * 4 : (r + 1) * w * 4]
            self.covered[(y + r) * self.width + x : (y + r) * self.width + x + w] = b"\x01" * w

    async def compact(self) -> int:
        length = 0
        for index in range(3):
            byte = (await self.read(1))[0]
            if index == 2:
                return length | byte << 14
            length |= (byte & 0x7F) << (7 * index)
            if not byte & 0x80:
                break
        return length

    async def tight(self, x: int, y: int, w: int, h: int) -> None:
        control = (await self.read(1))[0]
        for stream in range(4):
            if control >> stream & 1:
                self.inflaters[stream] = zlib.decompressobj()
        method = control >> 4
        if method == 0x08:
            r, g, b = await self.read(3)
            self.paint(x, y, w, h, bytes([b, g, r, 0]) * (w * h))
            return
        assert not method & 0x08, f"Tight method {method:#x} (JPEG was not asked for)"
        palette: list[bytes] = []
        if method & 0x04:
            kind = (await self.read(1))[0]
            assert kind in (0, 1), f"Tight filter {kind}"
            if kind == 1:
                colours = (await self.read(1))[0] + 1
                raw = await self.read(colours * 3)
                palette = [
                    bytes([raw[i + 2], raw[i + 1], raw[i], 0]) for i in range(0, len(raw), 3)
                ]
        bits = 1 if 0 < len(palette) <= 2 else 8
        size = (w * bits + 7) // 8 * h if palette else w * h * 3
        data = await self.read(size) if size < 12 else b""
        if size >= 12:
            data = self.inflaters[method & 0x03].decompress(await self.read(await self.compact()))
        assert len(data) == size
        out = bytearray()
        if not palette:
            for i in range(0, size, 3):
                out += bytes([data[i + 2], data[i + 1], data[i], 0])
        elif bits == 8:
            for index in data:
                out += palette[index]
        else:
            row_bytes = (w + 7) // 8
            for r in range(h):
                for c in range(w):
                    out += palette[data[r * row_bytes + c // 8] >> (7 - c % 8) & 1]
        self.paint(x, y, w, h, bytes(out))

    async def until(self, predicate: Callable[[Watcher], bool]) -> None:
        async with asyncio.timeout(UPDATE_TIMEOUT_S):
            while not predicate(self):
                await self.next_update()


def fully_painted(watcher: Watcher) -> bool:
    return all(watcher.covered)


@asynccontextmanager
async def watcher(url: str, encodings: tuple[int, ...]) -> AsyncIterator[Watcher]:
    async with connect(
        url, subprotocols=[Subprotocol("binary")], compression=None, max_size=None, proxy=None
    ) as connection:
        client = RfbClient(WebSocketChannel(connection))
        init = await client.handshake(shared=True)
        await client.send(b"\x00\x00\x00\x00" + BGRX32.pack())
        await client.send(struct.pack(f">BxH{len(encodings)}i", 2, len(encodings), *encodings))
        await client.request_update(incremental=False)
        viewer = Watcher(client, init.width, init.height)
        yield viewer


async def watch_url(stack: FullStack, session_id: str) -> str:
    answer = await stack.request(
        "GET", f"/api/browser-session/{session_id}/stream?watch=true", ALICE
    )
    assert answer["viewOnly"] is True
    url: str = answer["url"]
    return url


async def chord(viewer: RawViewer, keysyms: tuple[int, ...]) -> None:
    """Press the keys in order, release them in reverse."""
    down = b"".join(key_event(k, True) for k in keysyms)
    await viewer.channel.send(down + b"".join(key_event(k, False) for k in reversed(keysyms)))


def rgb(bgrx: bytes | bytearray) -> bytes:
    """The colour bytes of a BGRX32 screen, without the unused fourth."""
    data = bytes(bgrx)
    return data[0::4] + data[1::4] + data[2::4]


async def screen(stack: FullStack, session_id: str) -> bytes:
    """The screen's colours as a viewer of its own reads them."""
    async with raw_viewer(await stream_url(stack, ALICE, session_id)) as direct:
        return rgb((await direct.client.read_framebuffer()).pixels)


@pytest.mark.timeout(120)
async def test_watchers_share_one_upstream_see_the_screen_and_never_send_input(
    stack: FullStack,
) -> None:
    session = await start_form_task(stack)
    session_id = session["id"]
    await stack.request(
        "PUT", f"/api/browser-session/{session_id}/control", ALICE, {"action": "take_control"}
    )
    before = await stack.vnc_clients(session_id)
    centre = (session["viewport"]["width"] // 2, session["viewport"]["height"] // 2)
    async with (
        watcher(await watch_url(stack, session_id), (RAW,)) as first,
        watcher(await watch_url(stack, session_id), (RAW,)) as second,
        watcher(await watch_url(stack, session_id), (TIGHT, RAW)) as tight,
        raw_viewer(await stream_url(stack, ALICE, session_id)) as alice,
    ):
        for each in (first, second, tight):
            await each.until(fully_painted)
        # Two feeds (Raw, Tight) and alice's own connection: three, not four.
        assert await stack.vnc_clients(session_id) - before == 3
        assert await stack.metric("baton_stream_feeds") == 2
        # alice controls; her watch streams' input is dropped, her own stream's arrives.
        await first.client.send(pointer_event(*centre, 1) + pointer_event(*centre, 0))
        for char in "no":
            await tight.client.send(key_event(ord(char), True) + key_event(ord(char), False))
        await alice.click(*centre)
        await alice.type("ok")
        await alice.sync()
        await stack.site.wait_until(lambda: len(stack.site.keys()) >= 2)
        await asyncio.sleep(0.3)
        assert stack.site.keys() == "ok"
        # Tab out of the field: no blinking caret in the screens compared.
        await chord(alice, TAB)
        expected = await screen(stack, session_id)
        for each in (first, second, tight):
            await each.until(lambda w: rgb(w.pixels) == expected)
        # One joining mid-stream decodes from its first message.
        async with watcher(await watch_url(stack, session_id), (TIGHT, RAW)) as late:
            await late.until(lambda w: rgb(w.pixels) == expected)
            await chord(alice, SHIFT_TAB)
            await alice.type("!")
            await chord(alice, TAB)
            await stack.site.wait_until(lambda: len(stack.site.keys()) >= 3)
            changed = await screen(stack, session_id)
            assert changed != expected
            for each in (late, tight, first):
                await each.until(lambda w: rgb(w.pixels) == changed)
    # The feeds close with their last watcher, and their connections with them.
    await stack.wait_for_vnc_clients(session_id, before, within_s=10)
    assert await stack.metric("baton_stream_feeds") == 0
    await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)


async def test_watch_takes_true_or_false_and_a_view_share_always_watches(
    stack: FullStack,
) -> None:
    session = await start_form_task(stack)
    session_id = session["id"]
    with pytest.raises(ApiError) as refused:
        await stack.request("GET", f"/api/browser-session/{session_id}/stream?watch=yes", ALICE)
    assert refused.value.status == 400
    share = await stack.client(ALICE).create_share(session_id, "view")
    answer = await stack.request("GET", f"/api/browser-session/{session_id}/stream", share["token"])
    assert answer["viewOnly"] is True
    async with watcher(answer["url"], (RAW,)) as guest:
        await guest.until(fully_painted)
        assert await stack.metric("baton_stream_feeds") == 1
        # The session's end closes the watcher (1000), and the feed goes with it.
        await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)
        with pytest.raises(RfbError, match="1000"):
            async with asyncio.timeout(UPDATE_TIMEOUT_S):
                while True:
                    await guest.next_update()
    await stack.wait_for_metric("baton_stream_feeds", 0)


async def test_a_watcher_changing_its_encodings_moves_to_the_feed_for_them(
    stack: FullStack,
) -> None:
    session = await start_form_task(stack)
    session_id = session["id"]
    async with (
        watcher(await watch_url(stack, session_id), (RAW,)) as staying,
        watcher(await watch_url(stack, session_id), (RAW,)) as moving,
    ):
        for each in (staying, moving):
            await each.until(fully_painted)
        assert await stack.metric("baton_stream_feeds") == 1
        # As noVNC does when its quality changes: SetEncodings on the open connection.
        await moving.client.send(struct.pack(">BxH2i", 2, 2, TIGHT, RAW))
        moving.covered[:] = bytes(len(moving.covered))
        moving.pixels[:] = bytes(len(moving.pixels))
        # Its new feed starts it at a full frame (in Tight), the same screen.
        await moving.until(fully_painted)
        assert await stack.metric("baton_stream_feeds") == 2
        expected = await screen(stack, session_id)
        await moving.until(lambda w: rgb(w.pixels) == expected)
        await staying.until(lambda w: rgb(w.pixels) == expected)
    await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)
