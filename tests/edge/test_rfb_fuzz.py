"""RFB fuzz through the edge: thousands of messages, nothing reaches the page.

Real Xvnc, websockify, Chromium and all four services (tests/edge/full_stack.py);
the page reports every key and click on its button. A viewer who does not
control the session sends a few thousand seeded random RFB client messages,
valid input of every kind mixed with malformed messages (each of which closes
that connection with 1002), split across WebSocket frames at random. Then,
as the positive marker that the path was live all along, the same user takes
control and types: exactly those keys arrive, and nothing else ever did.
"""

from __future__ import annotations

import random
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from services.display.rfb_client import RfbError
from services.display.settings import NumberRange
from services.edge.rfb_filter import (
    FRAMEBUFFER_UPDATE_REQUEST,
    key_event,
    pointer_event,
    qemu_key_event,
)
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.harness import OPERATOR_TOKEN, user_token
from tests.edge.test_full_stack import raw_viewer, start_form_task, stream_url

ALICE = user_token("alice")
# This test's own display numbers and VNC ports.
DISPLAYS = NumberRange(950, 953)
VNC_PORTS = NumberRange(19150, 19153)
CONNECTIONS = 30
MESSAGES_PER_CONNECTION = 100
SEED = 12


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[FullStack]:
    async with full_stack(tmp_path, DISPLAYS, VNC_PORTS) as running:
        yield running


def input_message(rng: random.Random, width: int, height: int) -> bytes:
    """One well-formed client message of a kind the gate holds back (or that passes)."""
    keysym = rng.choice([*range(0x20, 0x7F), 0xFF0D, 0xFF09, 0xFFE3, 0xFFE9, 0xFF1B])
    kind = rng.randrange(8)
    if kind == 0:
        return key_event(keysym, rng.random() < 0.5)
    if kind == 1:
        return pointer_event(rng.randrange(width), rng.randrange(height), rng.randrange(32))
    if kind == 2:
        return qemu_key_event(keysym, rng.randrange(1, 256), rng.random() < 0.5)
    if kind == 3:
        text = rng.randbytes(rng.randrange(64))
        return struct.pack(">BxxxI", 6, len(text)) + text
    if kind == 4:
        # XVP: shutdown, reboot, reset.
        return struct.pack(">BxBB", 250, 1, rng.randrange(2, 5))
    if kind == 5:
        w, h = rng.randrange(640, 2000), rng.randrange(480, 1500)
        screen = struct.pack(">IHHHHI", 0, 0, 0, w, h, 0)
        return struct.pack(">BxHHBx", 251, w, h, 1) + screen
    # Harmless and passed on: update requests keep the server talking.
    return struct.pack(">BBHHHH", FRAMEBUFFER_UPDATE_REQUEST, 1, 0, 0, rng.randrange(1, width), 1)


MALFORMED = [
    b"\x07" + bytes(10),
    struct.pack(">BB", 255, 9),
    struct.pack(">BBH", 255, 1, 7),
    struct.pack(">BxxxI", 6, 2 * 1024 * 1024),
    struct.pack(">Bxxxi", 6, -(2**31)),
    struct.pack(">BxxxIB", 248, 0, 65),
    struct.pack(">BxHHBx", 251, 800, 600, 0),
    bytes([200]) + bytes(20),
]


def frames(rng: random.Random, data: bytes) -> list[bytes]:
    """`data` cut at random points: messages split across and packed into frames."""
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, len(data) // 40)))
    return [data[start:end] for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@pytest.mark.timeout(180)
async def test_fuzzed_rfb_puts_nothing_on_the_page(stack: FullStack) -> None:
    rng = random.Random(SEED)
    session = await start_form_task(stack)
    session_id = session["id"]
    width, height = session["viewport"]["width"], session["viewport"]["height"]
    sent = malformed_closes = 0
    for connection in range(CONNECTIONS):
        # Many connections in a few seconds: as the operator, whom the per-user
        # rate limit exempts; the operator does not hold control either.
        async with raw_viewer(await stream_url(stack, OPERATOR_TOKEN, session_id)) as viewer:
            data = b"".join(
                input_message(rng, width, height) for _ in range(MESSAGES_PER_CONNECTION)
            )
            for frame in frames(rng, data):
                await viewer.channel.send(frame)
            sent += MESSAGES_PER_CONNECTION
            if connection % 3 == 2:
                # Every third connection also passes the server a full update.
                await viewer.sync()
                continue
            await viewer.channel.send(rng.choice(MALFORMED))
            sent += 1
            with pytest.raises(RfbError) as closed:
                while True:
                    await viewer.channel.receive()
            cause = closed.value.__cause__
            assert isinstance(cause, ConnectionClosed)
            assert cause.rcvd is not None and cause.rcvd.code == 1002
            malformed_closes += 1
    assert sent >= 3000 and malformed_closes == 20
    # Not one key, click or resize got through: the page saw nothing.
    assert stack.site.reports == []

    # The positive marker: the path was live. Alice takes control and types.
    await stack.request(
        "PUT", f"/api/browser-session/{session_id}/control", ALICE, {"action": "take_control"}
    )
    async with raw_viewer(await stream_url(stack, ALICE, session_id)) as alice:
        await alice.click(width // 2, height // 2)
        await alice.type("ok")
        await alice.sync()
        await stack.site.wait_until(lambda: len(stack.site.keys()) >= 2)
    assert stack.site.keys() == "ok"
    assert not stack.site.finished()
    await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)
