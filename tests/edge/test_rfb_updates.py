"""UpdateReader: whole messages from any chunking, zlib rectangles made joinable;
WatcherSetup: what a watcher asks for, as a feed can serve it."""

from __future__ import annotations

import struct
import zlib

import pytest

from services.display.rfb_client import BGRX32
from services.edge.rfb_filter import RfbProtocolError
from services.edge.rfb_updates import (
    CURSOR,
    FRAMEBUFFER_UPDATE,
    LAST_RECT,
    RAW,
    SERVER_CUT_TEXT,
    TIGHT,
    UpdateError,
    UpdateReader,
    compact_length,
)
from services.edge.stream_feed import FeedKey, WatcherSetup

FORMAT = BGRX32.pack()


def rect(x: int, y: int, w: int, h: int, encoding: int) -> bytes:
    return struct.pack(">HHHHi", x, y, w, h, encoding)


class Server:
    """Tight as a VNC server writes it: zlib streams that run on between rectangles."""

    def __init__(self) -> None:
        self.deflaters = [zlib.compressobj(6) for _ in range(4)]

    def basic(self, stream: int, pixels: bytes, palette: bytes = b"") -> bytes:
        data = self.deflaters[stream].compress(pixels)
        data += self.deflaters[stream].flush(zlib.Z_SYNC_FLUSH)
        if palette:
            head = bytes([(0x4 | stream) << 4, 1, len(palette) // 3 - 1]) + palette
        else:
            head = bytes([stream << 4])
        return head + compact_length(len(data)) + data


def pixels(seed: int, count: int) -> bytes:
    return bytes((seed * 7 + i * 13) % 251 for i in range(count))


def updates(server: Server) -> tuple[bytes, list[bytes]]:
    """Two updates and a clipboard message; and the rectangles' expected pixels."""
    first_pixels = pixels(1, 40 * 10 * 3)
    second_pixels = pixels(2, 40 * 10 * 3)
    indexed = bytes(i % 4 for i in range(16 * 4))
    first = struct.pack(">BxH", FRAMEBUFFER_UPDATE, 4)
    first += rect(0, 0, 40, 10, TIGHT) + server.basic(1, first_pixels)
    first += rect(0, 10, 16, 4, TIGHT) + server.basic(2, indexed, palette=bytes(range(12)))
    first += rect(0, 20, 2, 2, TIGHT) + bytes([0x80]) + b"\x01\x02\x03"
    first += rect(3, 3, 2, 2, CURSOR) + bytes(2 * 2 * 4) + b"\xc0\xc0"
    second = struct.pack(">BxH", FRAMEBUFFER_UPDATE, 0xFFFF)
    second += rect(0, 0, 40, 10, TIGHT) + server.basic(1, second_pixels)
    second += rect(1, 1, 1, 1, RAW) + b"\x01\x02\x03\x04"
    second += rect(0, 0, 0, 0, LAST_RECT)
    clipboard = struct.pack(">Bxxxi", SERVER_CUT_TEXT, 3) + b"abc"
    return first + second + clipboard, [first_pixels, indexed, second_pixels]


def fresh_tight(data: bytes, at: int) -> tuple[bytes, int]:
    """The zlib Tight rectangle whose control byte is at `at`, inflated with a
    fresh stream (as a watcher joining at that message would); and where it ends."""
    control = data[at]
    assert control & (1 << (control >> 4 & 3)), "the rectangle's stream is reset"
    at += 1
    if control & 0x40:
        colours = data[at + 1] + 1 if data[at] == 1 else 0
        at += 2 + colours * 3 if colours else 1
    length, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return zlib.decompressobj().decompress(data[at : at + length]), at + length


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_messages_come_whole_and_decode_on_their_own(chunk: int) -> None:
    stream, expected = updates(Server())
    reader = UpdateReader(FORMAT)
    messages = []
    for at in range(0, len(stream), chunk):
        messages += reader.feed(stream[at : at + chunk])
    assert [m.kind for m in messages] == [FRAMEBUFFER_UPDATE, FRAMEBUFFER_UPDATE, SERVER_CUT_TEXT]
    first, second, _ = messages
    assert first.painted == 40 * 10 + 16 * 4 + 4
    assert first.cursor is not None and first.cursor.startswith(b"\x00\x00\x00\x01")
    assert second.painted == 40 * 10 + 1
    # Every zlib rectangle is a fresh stream (its reset bit set): a watcher
    # joining at either update inflates it with nothing before.
    header = 4 + 12
    first_rect, end = fresh_tight(first.data, header)
    palette_rect, _ = fresh_tight(first.data, end + 12)
    second_rect, _ = fresh_tight(second.data, header)
    assert [first_rect, palette_rect, second_rect] == expected


def test_a_stream_that_inflates_short_is_an_error() -> None:
    server = Server()
    message = struct.pack(">BxH", FRAMEBUFFER_UPDATE, 1)
    message += rect(0, 0, 40, 10, TIGHT) + server.basic(0, pixels(1, 100))
    with pytest.raises(UpdateError):
        UpdateReader(FORMAT).feed(message)


def test_an_encoding_the_feed_did_not_ask_for_is_an_error() -> None:
    message = struct.pack(">BxH", FRAMEBUFFER_UPDATE, 1) + rect(0, 0, 1, 1, 16)
    with pytest.raises(UpdateError):
        UpdateReader(FORMAT).feed(message)


def set_pixel_format(pixel_format: bytes) -> bytes:
    return b"\x00\x00\x00\x00" + pixel_format


def set_encodings(*encodings: int) -> bytes:
    return struct.pack(f">BxH{len(encodings)}i", 2, len(encodings), *encodings)


def test_a_watchers_key_keeps_only_what_a_feed_can_parse() -> None:
    setup = WatcherSetup(FORMAT)
    # ZRLE (16), QEMU extended keys (-258), Fence (-312) are left out; order kept.
    changed = setup.read(set_encodings(16, TIGHT, -258, RAW, -312, CURSOR, TIGHT))
    assert changed and not setup.requested
    assert setup.key == FeedKey(FORMAT, (TIGHT, RAW, CURSOR))
    assert not setup.read(struct.pack(">BBHHHH", 3, 0, 0, 0, 10, 10))
    assert setup.requested


def test_a_pixel_format_a_feed_cannot_serve_is_a_protocol_error() -> None:
    setup = WatcherSetup(FORMAT)
    with pytest.raises(RfbProtocolError):
        setup.read(set_pixel_format(bytes([24]) + FORMAT[1:]))
