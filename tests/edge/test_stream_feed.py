"""The feed's delivery to watchers: where a watcher starts, and a slow one skipping ahead."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest

from services.display.rfb_client import BGRX32, ServerInit
from services.edge import stream_feed
from services.edge.metrics import EdgeMetrics
from services.edge.rfb_updates import FRAMEBUFFER_UPDATE, SERVER_CUT_TEXT, ServerMessage
from services.edge.stream_feed import WATCHER_QUEUE_BYTES, Feed, FeedKey, SessionFeeds, Watcher
from services.edge.upstream import Upstream
from tests.conftest import eventually

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


class IdleConnection:
    """An upstream that takes what is sent and never sends anything."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = asyncio.Event()

    async def send(self, data: bytes) -> None:
        self.sent.append(data)

    async def close(self) -> None:
        self.closed.set()

    def __aiter__(self) -> IdleConnection:
        return self

    async def __anext__(self) -> bytes:
        await self.closed.wait()
        raise StopAsyncIteration


async def test_feeds_start_with_their_first_watcher_and_leave_nothing_after_the_last() -> None:
    metrics = EdgeMetrics()
    feeds = SessionFeeds(metrics)
    connection = IdleConnection()
    init = ServerInit(WIDTH, HEIGHT, BGRX32, "screen", raw=b"\x00" * 24)

    async def dial() -> Upstream:
        return cast(Upstream, SimpleNamespace(init=init, connection=connection, buffered=b""))

    key = FeedKey(BGRX32.pack(), ())
    first, second = Watcher(Sent()), Watcher(Sent())
    await feeds.join("s1", key, first, dial)
    await feeds.join("s1", key, second, dial)
    assert metrics.stream_feeds == 1 and first.feed is second.feed is not None
    # The feed set the format, asked for a full frame once (the second join is
    # within FULL_FRAME_RETRY_S of the first request).
    assert len(connection.sent) == 1
    feed = first.feed
    assert feed is not None
    feed.remove(first)
    assert not connection.closed.is_set()
    feed.remove(second)
    await asyncio.wait_for(connection.closed.wait(), 1)
    assert metrics.stream_feeds == 0
    assert cast(Any, feeds)._feeds == {} and cast(Any, feeds)._locks == {}


async def test_a_waiting_watcher_has_its_full_frame_asked_again_on_an_unchanging_screen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A display that sends nothing (no change on screen) prompts no request:
    the feed asks again on its own while a watcher still waits, and stops once
    none does."""
    monkeypatch.setattr(stream_feed, "FULL_FRAME_RETRY_S", 0.05)
    feeds = SessionFeeds(EdgeMetrics())
    connection = IdleConnection()
    init = ServerInit(WIDTH, HEIGHT, BGRX32, "screen", raw=b"\x00" * 24)

    async def dial() -> Upstream:
        return cast(Upstream, SimpleNamespace(init=init, connection=connection, buffered=b""))

    watcher = Watcher(Sent())
    await feeds.join("s1", FeedKey(BGRX32.pack(), ()), watcher, dial)
    full_frame = b"\x03\x00" + bytes(4) + bytes([0, WIDTH, 0, HEIGHT])
    assert connection.sent[0].endswith(full_frame)  # the start's request

    await eventually(lambda: connection.sent[1:3] == [full_frame, full_frame], 1)
    # The full frame comes: no more requests, however long it stays unchanged.
    feed = watcher.feed
    assert feed is not None
    feed._deliver(update(b"whole", WIDTH * HEIGHT))
    assert not watcher.pending
    before = len(connection.sent)
    await asyncio.sleep(0.2)
    assert len(connection.sent) == before
    feed.remove(watcher)
    await asyncio.wait_for(connection.closed.wait(), 1)
