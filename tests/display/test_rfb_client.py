"""The RFB client against scripted servers (no network)."""

from __future__ import annotations

import struct

import pytest

from services.display.rfb_client import BGRX32, RfbClient, RfbError


class ScriptedServer:
    """Feeds the server's bytes in small chunks; records what the client sends."""

    def __init__(self, *parts: bytes, chunk: int = 5) -> None:
        data = b"".join(parts)
        self._chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
        self.sent: list[bytes] = []

    async def send(self, data: bytes) -> None:
        self.sent.append(data)

    async def receive(self) -> bytes:
        if not self._chunks:
            raise RfbError("closed")
        return self._chunks.pop(0)


def server_init(width: int, height: int, name: bytes = b"baton") -> bytes:
    return struct.pack(">HH", width, height) + BGRX32.pack() + struct.pack(">I", len(name)) + name


async def test_rfb_38_handshake_with_security_none() -> None:
    server = ScriptedServer(
        b"RFB 003.008\n", bytes([2, 2, 1]), struct.pack(">I", 0), server_init(1280, 720)
    )
    init = await RfbClient(server).handshake()
    assert (init.width, init.height, init.name) == (1280, 720, "baton")
    assert init.pixel_format == BGRX32
    # Version, security type None, ClientInit with shared=1.
    assert server.sent == [b"RFB 003.008\n", b"\x01", b"\x01"]


async def test_rfb_33_handshake() -> None:
    server = ScriptedServer(b"RFB 003.003\n", struct.pack(">I", 1), server_init(640, 480))
    init = await RfbClient(server).handshake()
    assert (init.width, init.height) == (640, 480)
    assert server.sent == [b"RFB 003.003\n", b"\x01"]


async def test_refusals_carry_the_server_reason() -> None:
    reason = b"too many connections"
    server = ScriptedServer(b"RFB 003.008\n", b"\x00", struct.pack(">I", len(reason)), reason)
    with pytest.raises(RfbError, match="too many connections"):
        await RfbClient(server).handshake()
    server = ScriptedServer(b"RFB 003.008\n", bytes([1, 2]))
    with pytest.raises(RfbError, match="does not offer security type None"):
        await RfbClient(server).handshake()
    with pytest.raises(RfbError, match="not an RFB server"):
        await RfbClient(ScriptedServer(b"HTTP/1.1 400")).handshake()


async def test_framebuffer_assembled_from_rectangles() -> None:
    def rect(x: int, y: int, w: int, h: int, pixel: bytes) -> bytes:
        return struct.pack(">HHHHi", x, y, w, h, 0) + pixel * (w * h)

    red, blue = b"\x00\x00\xff\x00", b"\xff\x00\x00\x00"
    server = ScriptedServer(
        b"RFB 003.008\n",
        bytes([1, 1]),
        struct.pack(">I", 0),
        server_init(3, 2),
        b"\x02",  # a bell before the update
        b"\x00\x00" + struct.pack(">H", 1) + rect(0, 0, 3, 1, red),
        b"\x00\x00" + struct.pack(">H", 1) + rect(0, 1, 3, 1, blue),
    )
    client = RfbClient(server)
    await client.handshake()
    framebuffer = await client.read_framebuffer()
    assert (framebuffer.width, framebuffer.height) == (3, 2)
    assert framebuffer.rgb(2, 0) == (255, 0, 0)
    assert framebuffer.rgb(0, 1) == (0, 0, 255)
    # A non-incremental request for the whole screen, in raw encoding.
    assert server.sent[-1] == struct.pack(">BBHHHH", 3, 0, 0, 0, 3, 2)
    assert server.sent[-2] == struct.pack(">BxHi", 2, 1, 0)


async def test_framebuffer_needs_a_handshake_first() -> None:
    with pytest.raises(RfbError, match="handshake first"):
        await RfbClient(ScriptedServer()).read_framebuffer()
