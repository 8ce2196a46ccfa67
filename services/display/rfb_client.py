"""A small RFB (VNC) client over a WebSocket, as a viewer would connect.

The service uses it to prove a slot is ready (a full handshake through the
slot's WebSocket, with the slot's password); the edge uses it to open its
upstream connection; tests use it to read the framebuffer. It speaks RFB 3.3
to 3.8, security types None and VncAuth (services/runtime/vnc_auth.py), and
raw encoding only.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from ssl import SSLContext
from typing import Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from services.runtime.vnc_auth import CHALLENGE_SIZE, challenge_response

SECURITY_NONE = 1
SECURITY_VNC_AUTH = 2
ENCODING_RAW = 0
_MSG_FRAMEBUFFER_UPDATE = 0
_MSG_SET_COLOUR_MAP_ENTRIES = 1
_MSG_BELL = 2
_MSG_SERVER_CUT_TEXT = 3
_MSG_KEY_EVENT = 4


class RfbError(Exception):
    """The peer closed, refused or broke the RFB protocol."""


class ByteChannel(Protocol):
    async def send(self, data: bytes) -> None: ...

    async def receive(self) -> bytes:
        """The next chunk of bytes; RfbError once the peer has closed."""
        ...


@dataclass(frozen=True)
class PixelFormat:
    bits_per_pixel: int
    depth: int
    big_endian: bool
    true_colour: bool
    red_max: int
    green_max: int
    blue_max: int
    red_shift: int
    green_shift: int
    blue_shift: int

    _LAYOUT = struct.Struct(">BBBBHHHBBB3x")

    def pack(self) -> bytes:
        return self._LAYOUT.pack(
            self.bits_per_pixel,
            self.depth,
            int(self.big_endian),
            int(self.true_colour),
            self.red_max,
            self.green_max,
            self.blue_max,
            self.red_shift,
            self.green_shift,
            self.blue_shift,
        )

    @classmethod
    def unpack(cls, data: bytes) -> PixelFormat:
        bpp, depth, big, true, rmax, gmax, bmax, rsh, gsh, bsh = cls._LAYOUT.unpack(data)
        return cls(bpp, depth, bool(big), bool(true), rmax, gmax, bmax, rsh, gsh, bsh)


# 32 bits a pixel, little-endian, 8 bits a channel: bytes come as B, G, R, unused.
BGRX32 = PixelFormat(32, 24, False, True, 255, 255, 255, 16, 8, 0)


@dataclass(frozen=True)
class Rectangle:
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class ServerInit:
    width: int
    height: int
    pixel_format: PixelFormat
    name: str
    # The message as the server sent it, for a proxy to pass on unchanged.
    raw: bytes = b""


@dataclass(frozen=True)
class Framebuffer:
    width: int
    height: int
    # BGRX32, row after row.
    pixels: bytes

    def rgb(self, x: int, y: int) -> tuple[int, int, int]:
        offset = (y * self.width + x) * 4
        blue, green, red = self.pixels[offset : offset + 3]
        return red, green, blue


class RfbClient:
    def __init__(self, channel: ByteChannel) -> None:
        self._channel = channel
        self._buffer = bytearray()
        self.server_init: ServerInit | None = None

    async def _read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._buffer += await self._channel.receive()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def _read_u8(self) -> int:
        return (await self._read(1))[0]

    async def _read_u32(self) -> int:
        value: int = struct.unpack(">I", await self._read(4))[0]
        return value

    async def _read_reason(self) -> str:
        return (await self._read(await self._read_u32())).decode(errors="replace")

    async def handshake(self, shared: bool = True, password: str = "") -> ServerInit:
        """Version, security, ClientInit and ServerInit.

        With a password, VncAuth when the server offers it; without one,
        security type None only.
        """
        banner = await self._read(12)
        if not banner.startswith(b"RFB ") or not banner.endswith(b"\n"):
            raise RfbError(f"not an RFB server: {banner!r}")
        try:
            major, minor = (int(part) for part in banner[4:11].split(b"."))
        except ValueError:
            raise RfbError(f"not an RFB server: {banner!r}") from None
        minor = 8 if (major, minor) >= (3, 8) else 7 if (major, minor) == (3, 7) else 3
        await self._channel.send(b"RFB 003.%03d\n" % minor)
        if minor == 3:
            offered = [await self._read_u32()]
            if offered == [0]:
                raise RfbError(f"server refused the connection: {await self._read_reason()}")
        else:
            count = await self._read_u8()
            if count == 0:
                raise RfbError(f"server refused the connection: {await self._read_reason()}")
            offered = list(await self._read(count))
        if password and SECURITY_VNC_AUTH in offered:
            chosen = SECURITY_VNC_AUTH
        elif SECURITY_NONE in offered:
            chosen = SECURITY_NONE
        else:
            wanted = "VncAuth or None" if password else "None (no password given)"
            raise RfbError(f"server does not offer security type {wanted} (offers {offered})")
        if minor != 3:
            await self._channel.send(bytes([chosen]))
        if chosen == SECURITY_VNC_AUTH:
            challenge = await self._read(CHALLENGE_SIZE)
            await self._channel.send(challenge_response(password, challenge))
        # RFB 3.8 always sends a SecurityResult; earlier versions only after VncAuth.
        if minor == 8 or chosen == SECURITY_VNC_AUTH:
            result = await self._read_u32()
            if result != 0:
                reason = await self._read_reason() if minor == 8 else "authentication failed"
                raise RfbError(f"security handshake failed: {reason}")
        await self._channel.send(bytes([1 if shared else 0]))
        head = await self._read(20)
        width, height = struct.unpack(">HH", head[:4])
        pixel_format = PixelFormat.unpack(head[4:])
        name_length = await self._read(4)
        name = await self._read(struct.unpack(">I", name_length)[0])
        self.server_init = ServerInit(
            width,
            height,
            pixel_format,
            name.decode(errors="replace"),
            raw=head + name_length + name,
        )
        return self.server_init

    def take_buffered(self) -> bytes:
        """Bytes already read from the server but not consumed (for a proxy)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    async def receive(self) -> bytes:
        """The server's next bytes as they come, undecoded (what is buffered first):
        for a client that counts bytes rather than reading updates (the bench)."""
        if self._buffer:
            return self.take_buffered()
        return await self._channel.receive()

    async def send(self, message: bytes) -> None:
        """A client-to-server message as it is (a key or pointer event, for instance)."""
        await self._channel.send(message)

    async def press_key(self, keysym: int) -> None:
        """Key down then key up, in one write."""
        await self._channel.send(
            struct.pack(">BBxxI", _MSG_KEY_EVENT, 1, keysym)
            + struct.pack(">BBxxI", _MSG_KEY_EVENT, 0, keysym)
        )

    async def use_raw_pixels(self) -> None:
        """Ask for BGRX32 pixels in raw encoding, as `read_update` expects."""
        await self._channel.send(b"\x00\x00\x00\x00" + BGRX32.pack())
        await self._channel.send(struct.pack(">BxHi", 2, 1, ENCODING_RAW))

    async def request_update(self, incremental: bool = True) -> None:
        """FramebufferUpdateRequest for the whole screen."""
        if self.server_init is None:
            raise RfbError("handshake first")
        await self._channel.send(
            struct.pack(
                ">BBHHHH",
                3,
                int(incremental),
                0,
                0,
                self.server_init.width,
                self.server_init.height,
            )
        )

    async def read_update(self, pixels: bytearray) -> list[Rectangle]:
        """Read server messages until a FramebufferUpdate; paint it into `pixels`.

        `pixels` is the screen in BGRX32, row after row (`use_raw_pixels` first).
        Answers the rectangles painted.
        """
        if self.server_init is None:
            raise RfbError("handshake first")
        width, height = self.server_init.width, self.server_init.height
        while True:
            kind = await self._read_u8()
            if kind == _MSG_FRAMEBUFFER_UPDATE:
                break
            await self._skip_other_message(kind)
        (count,) = struct.unpack(">xH", await self._read(3))
        painted = []
        for _ in range(count):
            x, y, w, h, encoding = struct.unpack(">HHHHi", await self._read(12))
            if encoding != ENCODING_RAW:
                raise RfbError(f"unexpected encoding {encoding}")
            if x + w > width or y + h > height:
                raise RfbError(f"rectangle {w}x{h}+{x}+{y} is off the screen")
            data = await self._read(w * h * 4)
            for row in range(h):
                start = ((y + row) * width + x) * 4
                pixels[start : start + w * 4] = data[row * w * 4 : (row + 1) * w * 4]
            painted.append(Rectangle(x, y, w, h))
        return painted

    async def _skip_other_message(self, kind: int) -> None:
        if kind == _MSG_SET_COLOUR_MAP_ENTRIES:
            _, count = struct.unpack(">xHH", await self._read(5))
            await self._read(count * 6)
        elif kind == _MSG_BELL:
            return
        elif kind == _MSG_SERVER_CUT_TEXT:
            await self._read(3)
            await self._read(await self._read_u32())
        else:
            raise RfbError(f"unexpected server message type {kind}")

    async def read_framebuffer(self) -> Framebuffer:
        """Ask for the whole screen in raw BGRX32 and read until every pixel came."""
        if self.server_init is None:
            raise RfbError("handshake first")
        width, height = self.server_init.width, self.server_init.height
        await self.use_raw_pixels()
        await self.request_update(incremental=False)
        pixels = bytearray(width * height * 4)
        covered = bytearray(width * height)
        missing = width * height
        while missing > 0:
            for rect in await self.read_update(pixels):
                for row in range(rect.y, rect.y + rect.height):
                    start = row * width + rect.x
                    missing -= rect.width - sum(covered[start : start + rect.width])
                    covered[start : start + rect.width] = b"\x01" * rect.width
        return Framebuffer(width, height, bytes(pixels))


class TcpChannel:
    """RFB bytes on a TCP stream: a VNC server dialled directly (tests, the bench)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self) -> bytes:
        data = await self.reader.read(65536)
        if not data:
            raise RfbError("the VNC server closed the connection")
        return data


class WebSocketChannel:
    """RFB bytes carried in binary WebSocket messages."""

    def __init__(self, connection: ClientConnection) -> None:
        self._connection = connection

    async def send(self, data: bytes) -> None:
        try:
            await self._connection.send(data)
        except ConnectionClosed as exc:
            raise RfbError(f"WebSocket closed: {exc}") from exc

    async def receive(self) -> bytes:
        try:
            message = await self._connection.recv()
        except ConnectionClosed as exc:
            raise RfbError(f"WebSocket closed: {exc}") from exc
        if isinstance(message, str):
            raise RfbError("text message on an RFB WebSocket")
        return message


@asynccontextmanager
async def open_rfb(
    url: str, open_timeout: float = 5.0, ssl: SSLContext | None = None
) -> AsyncIterator[RfbClient]:
    """An RFB client on `url` (subprotocol `binary`), before the handshake;
    `ssl` verifies a wss:// URL (default: the system's CAs)."""
    try:
        connection = await connect(
            url,
            ssl=ssl if url.startswith("wss:") else None,
            subprotocols=[Subprotocol("binary")],
            compression=None,
            max_size=None,
            proxy=None,
            open_timeout=open_timeout,
            ping_interval=None,
        )
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise RfbError(f"cannot open {url}: {exc}") from exc
    try:
        if connection.subprotocol != "binary":
            raise RfbError(f"{url} did not accept the binary subprotocol")
        yield RfbClient(WebSocketChannel(connection))
    finally:
        await connection.close()


async def probe(
    url: str, password: str = "", open_timeout: float = 5.0, ssl: SSLContext | None = None
) -> ServerInit:
    """One complete RFB handshake through the WebSocket at `url`."""
    async with open_rfb(url, open_timeout, ssl) as client:
        return await client.handshake(shared=True, password=password)
