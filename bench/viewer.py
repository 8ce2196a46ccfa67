"""A viewer on an RFB WebSocket that keeps one update request outstanding, as noVNC does."""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import AsyncIterator, Callable

from services.display.rfb_client import RfbClient, RfbError, open_rfb

Rgb = tuple[int, int, int]


class Viewer:
    def __init__(self, client: RfbClient) -> None:
        self.client = client
        init = client.server_init
        assert init is not None
        self.width, self.height = init.width, init.height
        self.pixels = bytearray(self.width * self.height * 4)

    def rgb(self, x: int, y: int) -> Rgb:
        offset = (y * self.width + x) * 4
        blue, green, red = self.pixels[offset : offset + 3]
        return red, green, blue

    async def start(self, full: bool = True) -> None:
        """Raw pixels, then a first request (the whole screen when `full`)."""
        await self.client.use_raw_pixels()
        await self.client.request_update(incremental=not full)

    async def next_update(self) -> None:
        """Read one update and ask for the next at once."""
        await self.client.read_update(self.pixels)
        await self.client.request_update(incremental=True)

    async def wait_for(self, predicate: Callable[[Viewer], bool]) -> float:
        """Read updates until `predicate` holds; perf_counter time of that update."""
        while not predicate(self):
            await self.next_update()
        return time.perf_counter()

    async def click(self, x: int, y: int) -> None:
        """Button 1 down and up at (x, y): gives the page the keyboard focus."""
        await self.client.send(struct.pack(">BBHH", 5, 1, x, y) + struct.pack(">BBHH", 5, 0, x, y))

    async def key_to_pixel(self, keysym: int, x: int, y: int) -> float:
        """Seconds from sending a key press to the update that changes pixel (x, y)."""
        before = self.rgb(x, y)
        began = time.perf_counter()
        await self.client.press_key(keysym)
        arrived = await self.wait_for(lambda viewer: viewer.rgb(x, y) != before)
        return arrived - began


def near(colour: Rgb, expected: Rgb, tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected, strict=True))


@contextlib.asynccontextmanager
async def open_viewer(url: str, full: bool = True, password: str = "") -> AsyncIterator[Viewer]:
    """Connect, handshake (shared; VncAuth with a password) and send the first update request."""
    async with open_rfb(url, open_timeout=10) as client:
        await client.handshake(shared=True, password=password)
        viewer = Viewer(client)
        await viewer.start(full)
        yield viewer


async def keep_reading(viewer: Viewer) -> None:
    """A passive viewer: read and re-request updates until cancelled or closed."""
    with contextlib.suppress(RfbError):
        while True:
            await viewer.next_update()
