"""The stream WebSocket: proxying, input gating by control state, refusals.

A raw RFB client connects through the edge's stream URL; the slot's
websockify is the recording stand-in, so each test sees exactly which bytes the
edge let through. A FramebufferUpdateRequest with distinctive coordinates is a
marker: it always passes, so once it arrived, anything sent before it that was
going to arrive has arrived.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from services.edge.auth import Authenticator, Principal
from services.edge.rfb_filter import key_event, pointer_event
from services.edge.session_client import SessionClient
from tests.conftest import free_port
from tests.edge.harness import (
    CLIENT_HANDSHAKE,
    EDGE_HANDSHAKE,
    OPERATOR_TOKEN,
    SERVER_VERSION,
    Stack,
    running_stack,
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
async def viewer(url: str, origin: str | None = None) -> AsyncIterator[ClientConnection]:
    async with connect(
        url,
        subprotocols=["binary"],  # type: ignore[list-item]
        proxy=None,
        origin=origin,  # type: ignore[arg-type]
    ) as connection:
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
    good_url = await stack.stream_url(ALICE, session["id"])
    bad_url = await stack.stream_url(ALICE, session["id"])
    async with viewer(good_url) as good, viewer(bad_url) as bad:
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


async def expect_refused(url: str, origin: str | None = None) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            url,
            subprotocols=["binary"],  # type: ignore[list-item]
            proxy=None,
            origin=origin,  # type: ignore[arg-type]
        ):
            pass
    assert refused.value.response.status_code == 403


async def test_a_stream_url_opens_one_connection(stack: Stack) -> None:
    session = await stack.create_session(ALICE)
    url = await stack.stream_url(ALICE, session["id"])
    async with viewer(url) as first:
        # A copy of the URL (from a proxy's log, say) opens nothing, even
        # while the first connection is open and the token has not expired.
        await expect_refused(url)
        await first.send(marker(1))
        await stack.recorder.wait_for(0, marker(1))
    await expect_refused(url)
    assert len(stack.recorder.received) == 1
    # A fresh URL (what the console asks for on every reconnect) works.
    async with viewer(await stack.stream_url(ALICE, session["id"])) as second:
        await second.send(marker(2))
        await stack.recorder.wait_for(1, marker(2))


async def test_the_stream_flows_while_its_audit_report_is_still_on_its_way(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A viewer's first frame does not wait for the stream_opened audit write
    (bench/README.md, "Second round"); the trail still gets opened before closed."""
    release = asyncio.Event()
    recorded: list[str] = []
    both = asyncio.Event()
    record_audit = SessionClient.record_audit

    async def slow_record_audit(
        self: SessionClient,
        principal: Principal,
        session_id: str,
        kind: str,
        detail: Mapping[str, int | str],
    ) -> None:
        if kind == "stream_opened":
            await release.wait()
        await record_audit(self, principal, session_id, kind, detail)
        recorded.append(kind)
        if len(recorded) == 2:
            both.set()

    monkeypatch.setattr(SessionClient, "record_audit", slow_record_audit)
    session = await stack.create_session(ALICE)
    async with viewer(await stack.stream_url(ALICE, session["id"])) as alice:
        await alice.send(marker(1))
        # Well under the audit report's own timeout (2 s), which is all it waited for before.
        await asyncio.wait_for(stack.recorder.wait_for(0, marker(1)), 1.0)
        assert recorded == []
        release.set()
    await asyncio.wait_for(both.wait(), 5)
    assert recorded == ["stream_opened", "stream_closed"]


async def test_only_the_edges_own_and_configured_origins_may_open_the_stream() -> None:
    async with running_stack(cors_origins=("https://console.example",)) as stack:
        session = await stack.create_session(ALICE)

        async def url() -> str:
            return await stack.stream_url(ALICE, session["id"])

        # Cross-site WebSocket hijacking: a page elsewhere using a user's URL.
        await expect_refused(await url(), origin="https://evil.example")
        await expect_refused(await url(), origin=f"http://localhost:{stack.edge.port}")
        assert stack.recorder.received == []
        allowed = (stack.url, "https://console.example", None)
        for index, origin in enumerate(allowed):
            async with viewer(await url(), origin=origin) as connection:
                await connection.send(marker(index))
                await stack.recorder.wait_for(index, marker(index))


async def test_the_stream_closes_when_the_jwt_that_asked_for_it_expires(stack: Stack) -> None:
    session = await stack.create_session(ALICE)
    short_lived = user_token("alice", lifetime_s=3)
    async with viewer(await stack.stream_url(short_lived, session["id"])) as alice:
        await alice.send(marker(1))
        await stack.recorder.wait_for(0, marker(1))
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(15):
                while True:
                    await alice.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "token expired")
    # A viewer opened with a long-lived token stays.
    async with viewer(await stack.stream_url(ALICE, session["id"])) as still:
        await still.send(marker(2))
        await stack.recorder.wait_for(1, marker(2))


async def test_stream_tokens_never_reach_the_log(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    session = await stack.create_session(ALICE)
    url = await stack.stream_url(ALICE, session["id"])
    token = url.partition("?token=")[2]
    with caplog.at_level(logging.INFO):
        async with viewer(url) as alice:
            await alice.send(marker(1))
            await stack.recorder.wait_for(0, marker(1))
        await expect_refused(url)
    handshakes = [r.getMessage() for r in caplog.records if '"WebSocket ' in r.getMessage()]
    # The positive marker: uvicorn did log both handshakes, path and all.
    assert any("[accepted]" in line for line in handshakes), handshakes
    assert any(" 403" in line for line in handshakes), handshakes
    assert all("token=[redacted]" in line for line in handshakes), handshakes
    assert token[:20] not in caplog.text


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
