"""The feed's delivery to watchers: where a watcher starts, and a slow one skipping ahead."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from services.display.rfb_client import BGRX32, ServerInit
from services.edge.rfb_updates import FRAMEBUFFER_UPDATE, SERVER_CUT_TEXT, ServerMessage
from services.edge.stream_feed import WATCHER_QUEUE_BYTES, Feed, FeedKey, Watcher
from services.edge.upstream import Upstream

WIDTH, HEIGHT = 10, 10


def feed() -> Feed:
    init = ServerInit(WIDTH, HEIGHT, BGRX32, "screen", raw=b"\x00" * 24)
    upstream = cast(Upstream, SimpleNamespace(init=init, connection=None, buffered=b""))
    return Feed("s1", FeedKey(BGRX32.pack(), ()), upstream, lambda _: None)


def update(data: bytes, painted: int, cursor: bytes | None = None) -> ServerMessage:
    return ServerMessage(data, FRAMEBUFFER_UPDATE, painted, cursor=cursor)


class Sent:
    def __init__(self) -> None:
        self.data: list[bytes] = []

    async def __call__(self, data: bytes) -> None:
        self.data.append(data)


async def drain(watcher: Watcher) -> None:
    """Let the watcher's pump send what is queued."""
    watcher.wake()
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_watcher_starts_at_a_full_frame_after_the_cursor() -> None:
    the_feed, sent = feed(), Sent()
    watcher = Watcher(sent)
    pump = asyncio.create_task(watcher.pump())
    the_feed._deliver(update(b"cursor", 0, cursor=b"shape"))
    cast(Any, the_feed)._watchers.add(watcher)
    the_feed._deliver(update(b"part", WIDTH * HEIGHT - 1))
    the_feed._deliver(ServerMessage(b"clipboard", SERVER_CUT_TEXT))
    the_feed._deliver(update(b"whole", WIDTH * HEIGHT))
    the_feed._deliver(update(b"next", 1))
    await drain(watcher)
    # Nothing before the full frame, the cursor's shape first, never the clipboard.
    assert b"".join(sent.data) == b"shape" + b"whole" + b"next"
    watcher.end(1000, "done")
    assert await pump == (1000, "done")


async def test_a_watcher_too_far_behind_skips_to_the_next_full_frame() -> None:
    the_feed, sent = feed(), Sent()
    watcher = Watcher(sent)
    watcher.pending = False
    cast(Any, the_feed)._watchers.add(watcher)
    big = b"x" * (WATCHER_QUEUE_BYTES // 2 + 1)
    # One message is always taken, whatever its size; the queue is bounded.
    the_feed._deliver(update(big * 3, 1))
    assert not watcher.pending
    the_feed._deliver(update(big, 1))
    assert watcher.pending
    the_feed._deliver(update(b"part", 1))
    the_feed._deliver(update(b"whole", WIDTH * HEIGHT))
    pump = asyncio.create_task(watcher.pump())
    await drain(watcher)
    assert sent.data == [b"whole"]
    watcher.end(1000, "done")
    await pump
