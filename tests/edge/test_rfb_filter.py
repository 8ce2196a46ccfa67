"""Unit tests of the RFB client-to-server input gate."""

from __future__ import annotations

import struct

import pytest

from services.edge.rfb_filter import (
    MAX_CUT_TEXT,
    ClientStreamFilter,
    RfbProtocolError,
    key_event,
    parse_protocol_version,
    pointer_event,
    qemu_key_event,
)

HANDSHAKE_38 = b"RFB 003.008\n" + b"\x01" + b"\x01"
SET_PIXEL_FORMAT = b"\x00\x00\x00\x00" + bytes(range(16))
SET_ENCODINGS = struct.pack(">BxHiii", 2, 3, 0, 7, -223)
UPDATE_REQUEST = struct.pack(">BBHHHH", 3, 1, 0, 0, 1280, 720)
CONTINUOUS_UPDATES = struct.pack(">BBHHHH", 150, 1, 0, 0, 1280, 720)
FENCE = struct.pack(">BxxxIB", 248, 0x80000000, 3) + b"abc"
SET_DESKTOP_SIZE = struct.pack(">BxHHBx", 251, 800, 600, 1) + struct.pack(
    ">IHHHHI", 0, 0, 0, 800, 600, 0
)
QEMU_AUDIO_ENABLE = struct.pack(">BBH", 255, 1, 0)
QEMU_AUDIO_FORMAT = struct.pack(">BBHBBI", 255, 1, 2, 3, 2, 44100)
CUT_TEXT = struct.pack(">BxxxI", 6, 5) + b"hello"
EXTENDED_CUT_TEXT = struct.pack(">Bxxxi", 6, -4) + b"\x00\x00\x00\x01"
XVP_SHUTDOWN = struct.pack(">BxBB", 250, 1, 2)


class Gate:
    def __init__(self, open_: bool) -> None:
        self.open = open_

    def __call__(self) -> bool:
        return self.open


def after_handshake(open_: bool) -> tuple[ClientStreamFilter, Gate]:
    gate = Gate(open_)
    stream = ClientStreamFilter(gate)
    assert stream.feed(HANDSHAKE_38).forward == HANDSHAKE_38
    assert not stream.in_handshake
    return stream, gate


def test_handshake_passes_through_with_shared_flag_forced_on() -> None:
    stream = ClientStreamFilter(lambda: False)
    assert stream.feed(b"RFB 003.008\n").forward == b"RFB 003.008\n"
    assert stream.in_handshake
    assert stream.feed(b"\x01").forward == b"\x01"
    # Exclusive access (shared flag 0) would disconnect the other viewers.
    assert stream.feed(b"\x00").forward == b"\x01"
    assert not stream.in_handshake


def test_handshake_split_byte_by_byte_then_messages_in_same_chunk() -> None:
    stream = ClientStreamFilter(lambda: False)
    forwarded = b"".join(stream.feed(bytes([b])).forward for b in HANDSHAKE_38[:-1])
    assert forwarded == HANDSHAKE_38[:-1]
    result = stream.feed(b"\x01" + UPDATE_REQUEST + key_event(0x61, True))
    assert result.forward == b"\x01" + UPDATE_REQUEST
    assert result.input_dropped == 1


def test_rfb_33_has_no_security_choice_from_the_client() -> None:
    stream = ClientStreamFilter(lambda: True)
    result = stream.feed(b"RFB 003.003\n" + b"\x01" + key_event(0x61, True))
    assert result.forward == b"RFB 003.003\n\x01" + key_event(0x61, True)


def test_vnc_auth_response_passes_through() -> None:
    stream = ClientStreamFilter(lambda: False)
    response = bytes(range(16))
    result = stream.feed(b"RFB 003.008\n\x02" + response + b"\x01" + UPDATE_REQUEST)
    assert result.forward == b"RFB 003.008\n\x02" + response + b"\x01" + UPDATE_REQUEST


@pytest.mark.parametrize(
    "version", [b"RFB 003.00\n\n", b"HTTP/1.1 200", b"RFB 004.000\n", b"RFB 0x3.008\n"]
)
def test_bad_protocol_version_is_an_error(version: bytes) -> None:
    with pytest.raises(RfbProtocolError):
        ClientStreamFilter(lambda: True).feed(version)


def test_unsupported_security_type_is_an_error() -> None:
    with pytest.raises(RfbProtocolError, match="security type 19"):
        ClientStreamFilter(lambda: True).feed(b"RFB 003.008\n\x13")


def test_parse_protocol_version() -> None:
    assert parse_protocol_version(b"RFB 003.008\n") == (3, 8)


@pytest.mark.parametrize(
    "message",
    [
        SET_PIXEL_FORMAT,
        SET_ENCODINGS,
        UPDATE_REQUEST,
        CONTINUOUS_UPDATES,
        FENCE,
        QEMU_AUDIO_ENABLE,
        QEMU_AUDIO_FORMAT,
    ],
)
def test_display_messages_pass_while_input_is_closed(message: bytes) -> None:
    stream, _ = after_handshake(open_=False)
    result = stream.feed(message)
    assert result.forward == message
    assert (result.input_forwarded, result.input_dropped) == (0, 0)


@pytest.mark.parametrize(
    "message",
    [
        key_event(0x61, True),
        pointer_event(10, 20, 0),
        CUT_TEXT,
        EXTENDED_CUT_TEXT,
        qemu_key_event(0x61, 30, True),
        XVP_SHUTDOWN,
        # A view-only viewer must not resize the screen the others see.
        SET_DESKTOP_SIZE,
    ],
)
def test_input_messages_are_dropped_while_closed_and_forwarded_while_open(
    message: bytes,
) -> None:
    closed, _ = after_handshake(open_=False)
    result = closed.feed(message)
    assert result.forward == b""
    assert result.input_dropped == 1
    opened, _ = after_handshake(open_=True)
    result = opened.feed(message)
    assert result.forward == message
    assert result.input_forwarded == 1


def test_several_messages_in_one_chunk_are_filtered_individually() -> None:
    stream, _ = after_handshake(open_=False)
    chunk = UPDATE_REQUEST + key_event(0x61, True) + FENCE + pointer_event(1, 2, 1) + SET_ENCODINGS
    result = stream.feed(chunk)
    assert result.forward == UPDATE_REQUEST + FENCE + SET_ENCODINGS
    assert result.input_dropped == 2


def test_message_split_across_chunks_is_held_until_complete() -> None:
    stream, _ = after_handshake(open_=True)
    message = SET_ENCODINGS + CUT_TEXT
    forwarded = b""
    pieces = [message[:1], message[1:3], message[3:7], message[7:20], message[20:23], message[23:]]
    for piece in pieces:
        forwarded += stream.feed(piece).forward
    assert forwarded == message


def test_gate_is_read_per_chunk_so_input_switches_without_reconnecting() -> None:
    stream, gate = after_handshake(open_=False)
    assert stream.feed(key_event(0x61, True)).forward == b""
    gate.open = True
    assert stream.feed(key_event(0x62, True)).forward == key_event(0x62, True)
    gate.open = False
    # Closing the gate releases the key still held down, then drops the rest.
    result = stream.feed(key_event(0x63, True) + UPDATE_REQUEST)
    assert result.forward == key_event(0x62, False) + UPDATE_REQUEST
    assert stream.feed(UPDATE_REQUEST).forward == UPDATE_REQUEST


def test_release_held_input_lifts_keys_qemu_keys_and_buttons() -> None:
    stream, _ = after_handshake(open_=True)
    stream.feed(
        key_event(0x61, True)
        + key_event(0x62, True)
        + key_event(0x62, False)
        + qemu_key_event(0x41, 30, True)
        + pointer_event(5, 6, 1)
    )
    released = stream.release_held_input()
    assert released == (
        key_event(0x61, False) + qemu_key_event(0x41, 30, False) + pointer_event(5, 6, 0)
    )
    assert stream.release_held_input() == b""


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (b"\x07" + bytes(10), "unknown client message type 7"),
        (struct.pack(">BB", 255, 9), "subtype 9"),
        (struct.pack(">BBH", 255, 1, 7), "audio operation 7"),
        (struct.pack(">BxxxI", 6, MAX_CUT_TEXT + 1), "exceeds"),
        # Extended clipboard: a negative length, whose size is its magnitude.
        (struct.pack(">Bxxxi", 6, -(2**31)), "exceeds"),
        (struct.pack(">BxxxIB", 248, 0, 65), "exceeds"),
        (struct.pack(">BxHHBx", 251, 800, 600, 0), "0 screens"),
    ],
)
def test_unknown_or_malformed_message_is_an_error(message: bytes, error: str) -> None:
    stream, _ = after_handshake(open_=True)
    with pytest.raises(RfbProtocolError, match=error):
        stream.feed(UPDATE_REQUEST + message)


def test_forwarded_key_presses_and_pointer_events_are_counted_dropped_ones_not() -> None:
    allowed = [True]
    gate = ClientStreamFilter(lambda: allowed[0], after_handshake=True)
    chunk = (
        key_event(0x61, down=True)
        + key_event(0x61, down=False)
        + qemu_key_event(0x62, 48, down=True)
        + qemu_key_event(0x62, 48, down=False)
        + pointer_event(5, 5, 0)
        + pointer_event(6, 6, 1)
        + CUT_TEXT
    )
    result = gate.feed(chunk)
    assert (result.input_forwarded, result.keys_forwarded, result.pointer_forwarded) == (7, 2, 2)
    allowed[0] = False
    result = gate.feed(chunk)
    assert (result.input_dropped, result.keys_forwarded, result.pointer_forwarded) == (7, 0, 0)
