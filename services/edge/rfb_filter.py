"""Gate user input in an RFB (VNC) client-to-server byte stream.

The edge proxies a viewer's WebSocket to the slot's websockify. Everything the
viewer sends goes through `ClientStreamFilter.feed`, which parses the stream
message by message (messages may be split across WebSocket frames, and one frame
may carry several), forwards display-related messages unchanged and forwards
input messages (keys, pointer, clipboard, QEMU extended keys) only while the
`allow_input` predicate is true. Anything it cannot parse raises
`RfbProtocolError`, which closes that one connection.

The handshake is tracked from the client side only: a 12-byte ProtocolVersion,
then (3.7 and later) one byte choosing the security type, plus a 16-byte
response for VNC authentication, then the one-byte ClientInit. ClientInit's
shared flag is forced on so one viewer can never disconnect the others.

RFC 6143 and the community extensions (rfbproto) define the formats.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

# Client-to-server message types.
SET_PIXEL_FORMAT = 0
SET_ENCODINGS = 2
FRAMEBUFFER_UPDATE_REQUEST = 3
KEY_EVENT = 4
POINTER_EVENT = 5
CLIENT_CUT_TEXT = 6
ENABLE_CONTINUOUS_UPDATES = 150
FENCE = 248
XVP = 250
SET_DESKTOP_SIZE = 251
QEMU = 255

QEMU_EXTENDED_KEY_EVENT = 0
QEMU_AUDIO = 1

SECURITY_NONE = 1
SECURITY_VNC_AUTH = 2

# A viewer's clipboard is a person's paste, not a file transfer.
MAX_CUT_TEXT = 1024 * 1024
MAX_FENCE_PAYLOAD = 64
MAX_SCREENS = 64


class RfbProtocolError(Exception):
    """The client sent something that is not a valid RFB message."""


class _Phase(Enum):
    VERSION = "version"
    SECURITY = "security"
    VNC_AUTH_RESPONSE = "vnc_auth_response"
    CLIENT_INIT = "client_init"
    NORMAL = "normal"


@dataclass(frozen=True)
class FilterResult:
    """What to send upstream for one chunk, and what happened to input in it."""

    forward: bytes
    input_forwarded: int
    input_dropped: int
    # Of the input forwarded: key presses (key-down events) and pointer events,
    # counted for the replay's timeline (never which keys).
    keys_forwarded: int = 0
    pointer_forwarded: int = 0


@dataclass(frozen=True)
class MessageShape:
    length: int
    is_input: bool


def parse_protocol_version(data: bytes) -> tuple[int, int]:
    """(major, minor) of a 12-byte "RFB xxx.yyy\\n" ProtocolVersion."""
    major, minor = data[4:7], data[8:11]
    well_formed = (
        len(data) == 12
        and data.startswith(b"RFB ")
        and data[7:8] == b"."
        and data[11:] == b"\n"
        and major.isdigit()
        and minor.isdigit()
    )
    if not well_formed:
        raise RfbProtocolError(f"bad ProtocolVersion {data!r}")
    return int(major), int(minor)


def measure_message(buffer: bytes | bytearray) -> MessageShape | None:
    """The length of the normal-phase message at the start of `buffer`.

    None when more bytes are needed to know it; RfbProtocolError when the
    message is unknown or malformed.
    """
    if not buffer:
        return None
    kind = buffer[0]
    if kind == SET_PIXEL_FORMAT:
        return MessageShape(20, is_input=False)
    if kind == SET_ENCODINGS:
        if len(buffer) < 4:
            return None
        (count,) = struct.unpack_from(">H", buffer, 2)
        return MessageShape(4 + 4 * count, is_input=False)
    if kind == FRAMEBUFFER_UPDATE_REQUEST:
        return MessageShape(10, is_input=False)
    if kind == KEY_EVENT:
        return MessageShape(8, is_input=True)
    if kind == POINTER_EVENT:
        return MessageShape(6, is_input=True)
    if kind == CLIENT_CUT_TEXT:
        if len(buffer) < 8:
            return None
        # A negative length is the extended clipboard format: abs(length) bytes.
        (length,) = struct.unpack_from(">i", buffer, 4)
        size = abs(length)
        if size > MAX_CUT_TEXT:
            raise RfbProtocolError(f"ClientCutText of {size} bytes exceeds {MAX_CUT_TEXT}")
        return MessageShape(8 + size, is_input=True)
    if kind == ENABLE_CONTINUOUS_UPDATES:
        return MessageShape(10, is_input=False)
    if kind == FENCE:
        if len(buffer) < 9:
            return None
        payload = buffer[8]
        if payload > MAX_FENCE_PAYLOAD:
            raise RfbProtocolError(f"Fence payload of {payload} bytes exceeds {MAX_FENCE_PAYLOAD}")
        return MessageShape(9 + payload, is_input=False)
    if kind == XVP:
        # Power operations on the remote machine: treated as input.
        return MessageShape(4, is_input=True)
    if kind == SET_DESKTOP_SIZE:
        if len(buffer) < 8:
            return None
        screens = buffer[6]
        if screens == 0 or screens > MAX_SCREENS:
            raise RfbProtocolError(f"SetDesktopSize with {screens} screens")
        # Resizes the one screen every viewer and the AI's browser share:
        # only the controlling user may.
        return MessageShape(8 + 16 * screens, is_input=True)
    if kind == QEMU:
        return _measure_qemu(buffer)
    raise RfbProtocolError(f"unknown client message type {kind}")


def _measure_qemu(buffer: bytes | bytearray) -> MessageShape | None:
    if len(buffer) < 2:
        return None
    subtype = buffer[1]
    if subtype == QEMU_EXTENDED_KEY_EVENT:
        return MessageShape(12, is_input=True)
    if subtype == QEMU_AUDIO:
        if len(buffer) < 4:
            return None
        (operation,) = struct.unpack_from(">H", buffer, 2)
        if operation in (0, 1):  # enable, disable
            return MessageShape(4, is_input=False)
        if operation == 2:  # set format
            return MessageShape(10, is_input=False)
        raise RfbProtocolError(f"unknown QEMU audio operation {operation}")
    raise RfbProtocolError(f"unknown QEMU client message subtype {subtype}")


def _is_key_press(raw: bytes) -> bool:
    """A whole input message that presses a key (RFB or QEMU extended)."""
    if raw[0] == KEY_EVENT:
        return raw[1] != 0
    return raw[0] == QEMU and raw[1] == QEMU_EXTENDED_KEY_EVENT and raw[2:4] != b"\0\0"


def key_event(keysym: int, down: bool) -> bytes:
    return struct.pack(">BBxxI", KEY_EVENT, 1 if down else 0, keysym)


def pointer_event(x: int, y: int, buttons: int) -> bytes:
    return struct.pack(">BBHH", POINTER_EVENT, buttons, x, y)


def qemu_key_event(keysym: int, keycode: int, down: bool) -> bytes:
    return struct.pack(">BBHII", QEMU, QEMU_EXTENDED_KEY_EVENT, 1 if down else 0, keysym, keycode)


class ClientStreamFilter:
    """Incremental filter for one viewer's client-to-server RFB stream."""

    def __init__(self, allow_input: Callable[[], bool], after_handshake: bool = False) -> None:
        """`after_handshake`: the stream starts after ClientInit (the edge ran the handshake)."""
        self._allow_input = allow_input
        self._phase = _Phase.NORMAL if after_handshake else _Phase.VERSION
        self._minor = 0
        self._buffer = bytearray()
        # Held keys and buttons, so taking input away never leaves one stuck down.
        self._held_keys: set[int] = set()
        self._held_qemu_keys: dict[int, int] = {}
        self._buttons = 0
        self._pointer = (0, 0)

    @property
    def in_handshake(self) -> bool:
        return self._phase is not _Phase.NORMAL

    def feed(self, data: bytes) -> FilterResult:
        """Consume `data`; return the bytes to forward upstream."""
        self._buffer += data
        out = bytearray()
        forwarded = dropped = keys = pointer = 0
        while self._phase is not _Phase.NORMAL:
            chunk = self._handshake_step()
            if chunk is None:
                return FilterResult(bytes(out), 0, 0)
            out += chunk
        allowed = self._allow_input()
        if not allowed:
            out += self.release_held_input()
        while True:
            message = measure_message(self._buffer)
            if message is None or len(self._buffer) < message.length:
                break
            raw = bytes(self._buffer[: message.length])
            del self._buffer[: message.length]
            if not message.is_input:
                out += raw
            elif allowed:
                self._track_held(raw)
                out += raw
                forwarded += 1
                keys += _is_key_press(raw)
                pointer += raw[0] == POINTER_EVENT
            else:
                dropped += 1
        return FilterResult(bytes(out), forwarded, dropped, keys, pointer)

    def release_held_input(self) -> bytes:
        """Key-up and button-up events for whatever input is held down now.

        Forwarding them when input is taken away keeps a key or button from
        staying pressed on the display after the switch.
        """
        out = bytearray()
        for keysym in sorted(self._held_keys):
            out += key_event(keysym, down=False)
        for keycode, keysym in sorted(self._held_qemu_keys.items()):
            out += qemu_key_event(keysym, keycode, down=False)
        if self._buttons:
            out += pointer_event(*self._pointer, buttons=0)
        self._held_keys.clear()
        self._held_qemu_keys.clear()
        self._buttons = 0
        return bytes(out)

    def _track_held(self, raw: bytes) -> None:
        kind = raw[0]
        if kind == KEY_EVENT:
            down, keysym = struct.unpack_from(">BxxI", raw, 1)
            if down:
                self._held_keys.add(keysym)
            else:
                self._held_keys.discard(keysym)
        elif kind == POINTER_EVENT:
            buttons, x, y = struct.unpack_from(">BHH", raw, 1)
            self._buttons = buttons
            self._pointer = (x, y)
        elif kind == QEMU and raw[1] == QEMU_EXTENDED_KEY_EVENT:
            down, keysym, keycode = struct.unpack_from(">HII", raw, 2)
            if down:
                self._held_qemu_keys[keycode] = keysym
            else:
                self._held_qemu_keys.pop(keycode, None)

    def _take(self, count: int) -> bytes | None:
        if len(self._buffer) < count:
            return None
        chunk = bytes(self._buffer[:count])
        del self._buffer[:count]
        return chunk

    def _handshake_step(self) -> bytes | None:
        """Consume one handshake item; None when more bytes are needed."""
        if self._phase is _Phase.VERSION:
            version = self._take(12)
            if version is None:
                return None
            major, self._minor = parse_protocol_version(version)
            if major != 3:
                raise RfbProtocolError(f"unsupported RFB version {major}.{self._minor}")
            # RFB 3.3: the server picks the security type, the client sends none.
            self._phase = _Phase.SECURITY if self._minor >= 7 else _Phase.CLIENT_INIT
            return version
        if self._phase is _Phase.SECURITY:
            choice = self._take(1)
            if choice is None:
                return None
            if choice[0] == SECURITY_NONE:
                self._phase = _Phase.CLIENT_INIT
            elif choice[0] == SECURITY_VNC_AUTH:
                self._phase = _Phase.VNC_AUTH_RESPONSE
            else:
                raise RfbProtocolError(f"unsupported security type {choice[0]}")
            return choice
        if self._phase is _Phase.VNC_AUTH_RESPONSE:
            response = self._take(16)
            if response is None:
                return None
            self._phase = _Phase.CLIENT_INIT
            return response
        init = self._take(1)
        if init is None:
            return None
        self._phase = _Phase.NORMAL
        return b"\x01"
