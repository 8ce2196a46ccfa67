"""Server-to-client RFB messages, cut into whole messages and made joinable.

A shared feed (stream_feed.py) sends one display's updates to every watcher of a
session, and a watcher may join at any message. RFB updates are deltas on the
viewer's framebuffer, which a joiner gets whole from the next full frame; what
else a message depends on is Tight's four zlib streams, which run on from one
rectangle to the next for the life of the connection (RFC 6143 7.7.4 and rfbproto
"Tight Encoding"). So `UpdateReader` re-compresses each zlib rectangle on its own,
with the reset bit of its stream set: the data inflated once from the display's
stream, deflated once for all watchers. Fill, JPEG and raw-sized rectangles pass
as they are. The result decodes the same from any message boundary.

Only the encodings a feed asks the display for (`FEED_ENCODINGS`) are parsed;
anything else is a protocol error that ends the feed.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

# Server-to-client message types.
FRAMEBUFFER_UPDATE = 0
SET_COLOUR_MAP_ENTRIES = 1
BELL = 2
SERVER_CUT_TEXT = 3

RAW = 0
COPY_RECT = 1
TIGHT = 7
DESKTOP_SIZE = -223
LAST_RECT = -224
CURSOR = -239
DESKTOP_NAME = -307
EXTENDED_DESKTOP_SIZE = -308
JPEG_QUALITY = range(-32, -22)
COMPRESS_LEVEL = range(-256, -246)

# What a feed may ask the display for: encodings whose messages it can parse,
# none that makes the display wait for a client's reply (Fence, continuous updates).
FEED_ENCODINGS = frozenset(
    {RAW, COPY_RECT, TIGHT, DESKTOP_SIZE, LAST_RECT, CURSOR, DESKTOP_NAME, EXTENDED_DESKTOP_SIZE}
    | set(JPEG_QUALITY)
    | set(COMPRESS_LEVEL)
)

_TIGHT_FILL = 0x08
_TIGHT_JPEG = 0x09
_TIGHT_FILTER_PALETTE = 1
_TIGHT_FILTER_GRADIENT = 2
# Tight sends data shorter than this uncompressed.
_TIGHT_MIN_TO_COMPRESS = 12
# Fresh streams per rectangle: fast over small.
_DEFLATE_LEVEL = 1
_RECT = struct.Struct(">HHHHi")


class UpdateError(Exception):
    """The display sent something a feed cannot parse."""


class _Incomplete(Exception):
    """More bytes are needed for the message."""


@dataclass(frozen=True)
class PixelLayout:
    """How many bytes a pixel takes on the wire, raw and in Tight (its TPIXEL)."""

    bytes_per_pixel: int
    tight_pixel: int

    @classmethod
    def of(cls, pixel_format: bytes) -> PixelLayout:
        """From a 16-byte PIXEL_FORMAT (ServerInit, SetPixelFormat)."""
        bpp, depth, _big, true_colour = pixel_format[:4]
        maxima = struct.unpack_from(">HHH", pixel_format, 4)
        if bpp not in (8, 16, 32):
            raise UpdateError(f"{bpp} bits per pixel")
        # rfbproto: TPIXEL is 3 bytes for 32-bit true colour of depth 24, 8 bits a channel.
        packed = bpp == 32 and depth == 24 and true_colour and maxima == (255, 255, 255)
        return cls(bpp // 8, 3 if packed else bpp // 8)


@dataclass(frozen=True)
class ServerMessage:
    """One whole message, ready for any watcher."""

    data: bytes
    kind: int
    # Pixels painted by its rectangles (CopyRect and pseudo-encodings not counted).
    painted: int = 0
    # The framebuffer's new size, when the message changes it.
    size: tuple[int, int] | None = None
    # The cursor's shape, as a one-rectangle FramebufferUpdate, when it changes.
    cursor: bytes | None = None


class _Cursor:
    """A read position in a buffer that raises _Incomplete past its end."""

    def __init__(self, buffer: bytes | bytearray) -> None:
        self.buffer = buffer
        self.at = 0

    def take(self, count: int) -> bytes:
        end = self.at + count
        if end > len(self.buffer):
            raise _Incomplete
        data = bytes(self.buffer[self.at : end])
        self.at = end
        return data

    def u8(self) -> int:
        return self.take(1)[0]

    def compact_length(self) -> int:
        """Tight's 1-3 byte length: 7 bits a byte, the third byte's 8."""
        length = 0
        for index in range(3):
            byte = self.u8()
            if index == 2:
                return length | byte << 14
            length |= (byte & 0x7F) << (7 * index)
            if not byte & 0x80:
                return length
        return length


def compact_length(length: int) -> bytes:
    out = bytearray([length & 0x7F])
    if length > 0x7F:
        out[0] |= 0x80
        out.append(length >> 7 & 0x7F)
        if length > 0x3FFF:
            out[1] |= 0x80
            out.append(length >> 14 & 0xFF)
    return bytes(out)


class UpdateReader:
    """Cuts the display's byte stream into whole, joinable messages."""

    def __init__(self, pixel_format: bytes) -> None:
        self._layout = PixelLayout.of(pixel_format)
        self._buffer = bytearray()
        # Bytes the message at the head needs before it is worth measuring again.
        self._wanted = 1
        self._inflaters = [zlib.decompressobj() for _ in range(4)]

    def feed(self, data: bytes) -> list[ServerMessage]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= self._wanted:
            try:
                length = self._measure()
            except _Incomplete:
                # Measured again once more bytes came than this chunk's worth.
                self._wanted = len(self._buffer) + 1
                break
            messages.append(self._convert(bytes(self._buffer[:length])))
            del self._buffer[:length]
            self._wanted = 1
        return messages

    def _measure(self) -> int:
        cursor = _Cursor(self._buffer)
        self._walk(cursor, convert=False)
        return cursor.at

    def _convert(self, raw: bytes) -> ServerMessage:
        return self._walk(_Cursor(raw), convert=True)

    def _walk(self, cursor: _Cursor, convert: bool) -> ServerMessage:
        kind = cursor.u8()
        if kind == FRAMEBUFFER_UPDATE:
            return self._update(cursor, convert)
        if kind == SET_COLOUR_MAP_ENTRIES:
            head = cursor.take(5)
            (count,) = struct.unpack_from(">H", head, 3)
            cursor.take(6 * count)
        elif kind == BELL:
            pass
        elif kind == SERVER_CUT_TEXT:
            (length,) = struct.unpack(">xxxi", cursor.take(7))
            cursor.take(abs(length))
        else:
            raise UpdateError(f"unexpected server message type {kind}")
        return ServerMessage(bytes(cursor.buffer[: cursor.at]), kind)

    def _update(self, cursor: _Cursor, convert: bool) -> ServerMessage:
        (count,) = struct.unpack(">xH", cursor.take(3))
        out = bytearray(cursor.buffer[: cursor.at]) if convert else bytearray()
        painted = 0
        size: tuple[int, int] | None = None
        shape: bytes | None = None
        index = 0
        while index < count:
            header = cursor.take(12)
            _x, y, width, height, encoding = _RECT.unpack(header)
            start = cursor.at
            if encoding == TIGHT:
                body = self._tight(cursor, width, height, convert)
                painted += width * height
            else:
                self._skip(cursor, encoding, width, height)
                body = bytes(cursor.buffer[start : cursor.at])
                if encoding == RAW:
                    painted += width * height
                elif encoding == DESKTOP_SIZE or (encoding == EXTENDED_DESKTOP_SIZE and y == 0):
                    size = (width, height)
                elif encoding == CURSOR:
                    shape = struct.pack(">BxH", FRAMEBUFFER_UPDATE, 1) + header + body
            if convert:
                out += header + body
            index += 1
            if encoding == LAST_RECT:
                break
        data = bytes(out) if convert else b""
        return ServerMessage(data, FRAMEBUFFER_UPDATE, painted, size, shape)

    def _skip(self, cursor: _Cursor, encoding: int, width: int, height: int) -> None:
        if encoding == RAW:
            cursor.take(width * height * self._layout.bytes_per_pixel)
        elif encoding == COPY_RECT:
            cursor.take(4)
        elif encoding == CURSOR:
            cursor.take(width * height * self._layout.bytes_per_pixel + (width + 7) // 8 * height)
        elif encoding in (DESKTOP_SIZE, LAST_RECT):
            pass
        elif encoding == EXTENDED_DESKTOP_SIZE:
            screens = cursor.take(4)[0]
            cursor.take(16 * screens)
        elif encoding == DESKTOP_NAME:
            (length,) = struct.unpack(">I", cursor.take(4))
            cursor.take(length)
        else:
            raise UpdateError(f"unexpected encoding {encoding}")

    def _tight(self, cursor: _Cursor, width: int, height: int, convert: bool) -> bytes:
        """One Tight rectangle's bytes after its header; converted, a fresh stream's."""
        control = cursor.u8()
        method = control >> 4
        if convert:
            for stream in range(4):
                if control >> stream & 1:
                    self._inflaters[stream] = zlib.decompressobj()
        if method == _TIGHT_FILL:
            return bytes([control & 0xF0]) + cursor.take(self._layout.tight_pixel)
        if method == _TIGHT_JPEG:
            length = cursor.compact_length()
            return bytes([control & 0xF0]) + compact_length(length) + cursor.take(length)
        if method & 0x08:
            raise UpdateError(f"unknown Tight compression {method:#x}")
        stream = method & 0x03
        head = bytearray()
        size = width * height * self._layout.tight_pixel
        if method & 0x04:
            kind = cursor.u8()
            head.append(kind)
            if kind == _TIGHT_FILTER_PALETTE:
                colours = cursor.u8() + 1
                head.append(colours - 1)
                head += cursor.take(colours * self._layout.tight_pixel)
                bits = 1 if colours <= 2 else 8
                size = (width * bits + 7) // 8 * height
            elif kind not in (0, _TIGHT_FILTER_GRADIENT):
                raise UpdateError(f"unknown Tight filter {kind}")
        if size < _TIGHT_MIN_TO_COMPRESS:
            return bytes([control & 0xF0]) + head + cursor.take(size)
        compressed = cursor.take(cursor.compact_length())
        if not convert:
            return b""
        pixels = self._inflaters[stream].decompress(compressed)
        if len(pixels) != size:
            raise UpdateError(f"Tight stream {stream} gave {len(pixels)} bytes, not {size}")
        deflater = zlib.compressobj(_DEFLATE_LEVEL)
        fresh = deflater.compress(pixels) + deflater.flush(zlib.Z_SYNC_FLUSH)
        # Bits 0-3 reset streams 0-3 before the rectangle is read.
        return bytes([(control & 0xF0) | 1 << stream]) + head + compact_length(len(fresh)) + fresh
