"""The stream WebSocket: proxying, input gating by control state, refusals.

A raw RFB client connects through the edge's stream URL; the slot's
websockify is the recording stand-in, so each test sees exactly which bytes the
edge let through. A FramebufferUpdateRequest with distinctive coordinates is a
marker: it always passes, so once it arrived, anything sent before it that was
going to arrive has arrived.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from services.edge.auth import Authenticator, Principal
from services.edge.rfb_filter import key_event, pointer_event
from tests.conftest import free_port
from tests.edge.harness import (
    CLIENT_HANDSHAKE,
    EDGE_HANDSHAKE,
    OPERATOR_TOKEN,
    SERVER_VERSION,
    Stack,
    user_token,
)

ALICE = user_token("alice")
# What the display receives first: ClientInit, shared (the edge's own handshake).
CLIENT_INIT = b"\x01"


def marker(number: int) -> bytes:
    return struct.pack(">BBHHHH", 3, 1, number, number, 1, 1)


KEY_A = key_event(0x61, True) + key_event(0x61, False)
CLICK = pointer_event(10, 10, 1) + pointer_event(10, 10, 0)


@asynccontextmanager
async def viewer(url: str) -> AsyncIterator[ClientConnection]:
    async with connect(url, subprotocols=["binary"], proxy=None) as connection:  # type: ignore[list-item]
        assert connection.subprotocol == "binary"
        assert await connection.recv() == SERVER_VERSION
        await connection.send(CLIENT_HANDSHAKE)
        received = b""
        while len(received) < len(EDGE_HANDSHAKE):
            message = await connection.recv()
            assert isinstance(message, bytes)
            received += message
        assert received == EDGE_HANDSHAKE
        yield connection


async def test_input_passes_only_while_the_viewer_controls(stack: Stack) -> None:
    session = await stack.create_session(ALICE)
    async with viewer(await stack.stream_url(ALICE, session["id"])) as alice:
        await alice.send(KEY_A + CLICK + marker(1))
        received = await stack.recorder.wait_for(0, marker(1))
        assert received == CLIENT_INIT + marker(1)

        await stack.control(ALICE, session["id"], "take_control")
        # Same connection: no reconnect needed for input to flow.
        await alice.send(KEY_A + CLICK + marker(2))
        received = await stack.recorder.wait_for(0, marker(2))
        assert received.endswith(marker(1) + KEY_A + CLICK + marker(2))

        await alice.send(key_event(0x62, True) + marker(3))
        await stack.recorder.wait_for(0, marker(3))
        await stack.control(ALICE, session["id"], "return_control")
        await alice.send(KEY_A + marker(4))
        received = await stack.recorder.wait_for(0, marker(4))
        # The key still held when control went back is released, then input stops.
        assert received.endswith(marker(3) + key_event(0x62, False) + marker(4))


async def test_another_viewer_sends_nothing_while_the_user_controls(stack: Stack) -> None:
    session = await stack.create_session(ALICE)
    await stack.control(ALICE, session["id"], "take_control")
    operator_url = await stack.stream_url(OPERATOR_TOKEN, session["id"])
    alice_url = await stack.stream_url(ALICE, session["id"])
    async with viewer(alice_url) as alice, viewer(operator_url) as operator:
        await alice.send(marker(1))
        await stack.recorder.wait_for(0, marker(1))
        await operator.send(KEY_A + CLICK + marker(2))
        assert await stack.recorder.wait_for(1, marker(2)) == CLIENT_INIT + marker(2)
        await alice.send(KEY_A + marker(3))
        assert (await stack.recorder.wait_for(0, marker(3))).endswith(KEY_A + marker(3))


async def test_a_malformed_message_closes_only_that_viewer(stack: Stack) -> None:
    session = await stack.create_session(ALICE)
    url = await stack.stream_url(ALICE, session["id"])
    async with viewer(url) as good, viewer(url) as bad:
        await bad.send(b"\x07garbage")
        with pytest.raises(ConnectionClosed) as closed:
            await bad.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1002
        await good.send(marker(1))
        await stack.recorder.wait_for(0, marker(1))
    async with stack.http.get(
        f"{stack.url}/api/browser-session/{session['id']}",
        headers={"Authorization": f"Bearer {ALICE}"},
    ) as response:
        assert (await response.json())["state"] == "AI_CONTROL"


async def test_ending_the_session_closes_its_viewers(stack: Stack) -> None:
    session = await stack.create_session(ALICE)
    async with viewer(await stack.stream_url(ALICE, session["id"])) as alice:
        async with stack.http.delete(
            f"{stack.url}/api/browser-session/{session['id']}",
            headers={"Authorization": f"Bearer {ALICE}"},
        ) as response:
            assert response.status == 200
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await alice.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


async def test_a_vanished_controller_leaves_no_key_or_button_down(stack: Stack) -> None:
    session = await stack.create_session(ALICE)
    await stack.control(ALICE, session["id"], "take_control")
    async with viewer(await stack.stream_url(ALICE, session["id"])) as alice:
        await alice.send(key_event(0x61, True) + pointer_event(7, 8, 1) + marker(1))
        await stack.recorder.wait_for(0, marker(1))
        # The browser tab dies: no close handshake, no key-up.
        alice.transport.abort()
    received = await stack.recorder.wait_closed(0)
    assert received.endswith(marker(1) + key_event(0x61, False) + pointer_event(7, 8, 0))


async def test_an_oversized_message_closes_the_viewer_unread(stack: Stack) -> None:
    session = await stack.create_session(ALICE)
    async with viewer(await stack.stream_url(ALICE, session["id"])) as alice:
        # Not even parsed (it would be a 1002 RFB protocol error): refused
        # for its size, so a viewer cannot make the edge buffer megabytes.
        await alice.send(b"\x07" * (3 * 1024 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            await alice.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def expect_refused(url: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, subprotocols=["binary"], proxy=None):  # type: ignore[list-item]
            pass
    assert refused.value.response.status_code == 403


async def test_refused_tokens(stack: Stack) -> None:
    first = await stack.create_session(ALICE)
    second = await stack.create_session(ALICE)
    url = await stack.stream_url(ALICE, first["id"])
    base, _, token = url.partition("?token=")
    await expect_refused(base)
    await expect_refused(base + "?token=" + token[:-3])
    # A token is scoped to its session.
    await expect_refused(url.replace(str(first["id"]), str(second["id"])))
    # Expired: signed with the edge's key, but issued long ago.
    past = Authenticator(OPERATOR_TOKEN, None, clock=lambda: 1_000.0)
    expired = past.issue_stream_token(str(first["id"]), Principal("alice"), lifetime=60)
    await expect_refused(f"{base}?token={expired.token}")
    # Issued to a user who cannot see the session.
    stranger = stack.authenticator.issue_stream_token(str(first["id"]), Principal("bob"), 60)
    await expect_refused(f"{base}?token={stranger.token}")
    assert stack.recorder.received == []


async def test_unreachable_display_closes_with_1011(stack: Stack) -> None:
    stack.display.websocket_url = f"ws://127.0.0.1:{free_port()}/websockify"
    session = await stack.create_session(ALICE)
    url = await stack.stream_url(ALICE, session["id"])
    async with connect(url, subprotocols=["binary"], proxy=None) as connection:  # type: ignore[list-item]
        assert await connection.recv() == SERVER_VERSION
        await connection.send(CLIENT_HANDSHAKE)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await connection.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


async def test_a_wrong_slot_password_closes_with_1011(stack: Stack) -> None:
    stack.display.vnc_password = "wrong"
    session = await stack.create_session(ALICE)
    url = await stack.stream_url(ALICE, session["id"])
    with pytest.raises(ConnectionClosed) as closed:
        async with viewer(url):
            pass
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert stack.recorder.refused == 1
