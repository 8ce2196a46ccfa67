"""Watch-only streams: one upstream per session (and viewer format) on this edge.

A watcher never sends input, so it needs no connection of its own to the
display: a `Feed` holds one RFB connection to the slot and pushes each of its
messages to every watcher it serves (docs/stream.md, "Watch-only streams"). The
display's cost stays flat in the number of watchers: one websockify process,
one client of the VNC server, whatever the audience.

- The feed asks the display for updates itself, the next one as soon as one has
  come; what the watchers ask for is not forwarded.
- Messages come through `UpdateReader` (rfb_updates.py), so any of them can be a
  watcher's first: a new watcher waits for the next full frame (the feed asks
  for one), after the cursor's current shape.
- Watchers with another pixel format or other encodings (a quality setting)
  get a feed of their own: a feed serves one `FeedKey`.
- A watcher that cannot keep up loses what is queued for it past
  WATCHER_QUEUE_BYTES and catches up at the next full frame, without slowing
  the feed.
- The clipboard (ServerCutText) is not sent to watchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from websockets.exceptions import ConnectionClosed

from services.edge.metrics import EdgeMetrics
from services.edge.rfb_filter import (
    FRAMEBUFFER_UPDATE_REQUEST,
    SET_ENCODINGS,
    SET_PIXEL_FORMAT,
    RfbProtocolError,
    measure_message,
)
from services.edge.rfb_updates import (
    FEED_ENCODINGS,
    FRAMEBUFFER_UPDATE,
    SERVER_CUT_TEXT,
    PixelLayout,
    ServerMessage,
    UpdateError,
    UpdateReader,
)
from services.edge.upstream import Upstream

log = logging.getLogger(__name__)

# Bytes a watcher may have waiting before it skips to the next full frame; a
# message is always taken when nothing waits, however large.
WATCHER_QUEUE_BYTES = 1024 * 1024
# Watchers whose sends run in one turn of the event loop (Feed._wake_from).
WAKE_BATCH = 32
# A watcher still waiting for its first full frame this long has it asked for again.
FULL_FRAME_RETRY_S = 1.0
CLOSE_NORMAL = 1000
CLOSE_INTERNAL_ERROR = 1011


@dataclass(frozen=True)
class FeedKey:
    """What a watcher's decoder expects: its pixel format and the encodings it takes."""

    pixel_format: bytes
    encodings: tuple[int, ...]


class WatcherSetup:
    """A watcher's SetPixelFormat and SetEncodings, from the messages it sends."""

    def __init__(self, native_format: bytes) -> None:
        self.pixel_format = native_format
        self.encodings: tuple[int, ...] = ()
        self.requested = False

    def read(self, messages: bytes) -> bool:
        """Apply whole client messages (as ClientStreamFilter forwards them);
        True when they changed the key."""
        before = self.key
        at = 0
        while at < len(messages):
            shape = measure_message(messages[at:])
            if shape is None or at + shape.length > len(messages):
                raise RfbProtocolError("a partial message")
            raw = messages[at : at + shape.length]
            at += shape.length
            if raw[0] == SET_PIXEL_FORMAT:
                try:
                    PixelLayout.of(raw[4:20])
                except UpdateError as exc:
                    raise RfbProtocolError(f"SetPixelFormat: {exc}") from None
                self.pixel_format = raw[4:20]
            elif raw[0] == SET_ENCODINGS:
                count = (len(raw) - 4) // 4
                self.encodings = struct.unpack_from(f">{count}i", raw, 4)
            elif raw[0] == FRAMEBUFFER_UPDATE_REQUEST:
                self.requested = True
        return self.key != before

    @property
    def key(self) -> FeedKey:
        # Only what a feed can parse is asked for; the rest the watcher does without.
        wanted = tuple(dict.fromkeys(e for e in self.encodings if e in FEED_ENCODINGS))
        return FeedKey(self.pixel_format, wanted)


class Watcher:
    """One watcher's queue, drained into its WebSocket by `pump`."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]]) -> None:
        self._send = send
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._end: tuple[int, str] | None = None
        # Waiting for a full frame: on joining, and after falling behind.
        self.pending = True
        self.feed: Feed | None = None

    def push(self, data: bytes) -> bool:
        """Queue a message; False when the watcher was too far behind and skips ahead."""
        if self._queued and self._queued + len(data) > WATCHER_QUEUE_BYTES:
            self._queue.clear()
            self._queued = 0
            self.pending = True
            return False
        self._queue.append(data)
        self._queued += len(data)
        return True

    def wake(self) -> None:
        """Have `pump` send what is queued."""
        self._wake.set()

    def end(self, code: int, reason: str) -> None:
        self._end = (code, reason)
        self._wake.set()

    async def pump(self) -> tuple[int, str]:
        """Send what the feed queued until the feed ends; answers the close code."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._queue:
                data = b"".join(self._queue)
                self._queue.clear()
                self._queued = 0
                await self._send(data)
            elif self._end is not None:
                return self._end


def _request(width: int, height: int, incremental: bool) -> bytes:
    return struct.pack(">BBHHHH", FRAMEBUFFER_UPDATE_REQUEST, incremental, 0, 0, width, height)


class Feed:
    """One upstream connection, its messages pushed to every watcher."""

    def __init__(
        self, session_id: str, key: FeedKey, upstream: Upstream, on_end: Callable[[Feed], None]
    ) -> None:
        self.session_id = session_id
        self.key = key
        self._upstream = upstream
        self._on_end = on_end
        self._reader = UpdateReader(key.pixel_format)
        self._watchers: set[Watcher] = set()
        self._size = (upstream.init.width, upstream.init.height)
        self._cursor: bytes | None = None
        # When a full frame was last asked for and has not come yet.
        self._full_asked_at: float | None = None
        # Asking again while a watcher still waits, whether the screen changes or not.
        self._retry: asyncio.TimerHandle | None = None
        self._asking: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        # Set once the feed has stopped (SessionFeeds._forget).
        self.ended = False

    @property
    def server_init(self) -> bytes:
        """ServerInit for a new watcher: the display's, at the current size."""
        return struct.pack(">HH", *self._size) + self._upstream.init.raw[4:]

    async def start(self) -> None:
        setup = b"\x00\x00\x00\x00" + self.key.pixel_format
        encodings = self.key.encodings
        setup += struct.pack(f">BxH{len(encodings)}i", SET_ENCODINGS, len(encodings), *encodings)
        self._full_asked_at = time.monotonic()
        await self._upstream.connection.send(setup + _request(*self._size, incremental=False))
        self._task = asyncio.create_task(self._run())

    async def add(self, watcher: Watcher) -> None:
        watcher.pending = True
        watcher.feed = self
        self._watchers.add(watcher)
        await self._ask_full_frame()

    def remove(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
        if watcher.feed is self:
            watcher.feed = None
        if not self._watchers:
            self._stop()

    def _stop(self) -> None:
        self._on_end(self)
        self._cancel_retry()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        # Closed here too: a run task cancelled before it started never reaches its finally.
        self._closing = asyncio.create_task(self._upstream.connection.close())

    async def _ask_full_frame(self) -> None:
        """Ask the display for a full frame (at most once per FULL_FRAME_RETRY_S),
        and again after that while a watcher still waits for one: an unchanging
        screen sends no update that would otherwise prompt the next request."""
        if self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(FULL_FRAME_RETRY_S, self._retry_due)
        asked = self._full_asked_at
        if asked is not None and time.monotonic() - asked < FULL_FRAME_RETRY_S:
            return
        self._full_asked_at = time.monotonic()
        with contextlib.suppress(ConnectionClosed):
            await self._upstream.connection.send(_request(*self._size, incremental=False))

    def _retry_due(self) -> None:
        self._retry = None
        if self.ended or not any(watcher.pending for watcher in self._watchers):
            return
        if self._asking is None or self._asking.done():
            self._asking = asyncio.create_task(self._ask_full_frame())

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._asking is not None:
            self._asking.cancel()

    async def _run(self) -> None:
        code, reason = CLOSE_NORMAL, "the display closed the connection"
        connection = self._upstream.connection
        try:
            for message in self._reader.feed(self._upstream.buffered):
                self._deliver(message)
            self._wake_from(list(self._watchers), 0)
            async for data in connection:
                if isinstance(data, str):
                    raise UpdateError("text message on an RFB WebSocket")
                updated = False
                for message in self._reader.feed(data):
                    self._deliver(message)
                    updated |= message.kind == FRAMEBUFFER_UPDATE
                self._wake_from(list(self._watchers), 0)
                if updated:
                    if any(watcher.pending for watcher in self._watchers):
                        await self._ask_full_frame()
                    await connection.send(_request(*self._size, incremental=True))
        except ConnectionClosed:
            pass
        except UpdateError as exc:
            log.warning(
                "session %s: a feed's display sent what it cannot read: %s", self.session_id, exc
            )
            code, reason = CLOSE_INTERNAL_ERROR, "the display sent an unreadable update"
        finally:
            self._on_end(self)
            self._cancel_retry()
            for watcher in self._watchers:
                watcher.end(code, reason)
            await connection.close()

    def _wake_from(self, watchers: list[Watcher], start: int) -> None:
        """Wake the watchers' pumps WAKE_BATCH at a time, one batch a turn of the
        event loop: between two batches the loop reads its sockets, so a
        controller's frame on this edge does not wait for hundreds of sends."""
        for watcher in watchers[start : start + WAKE_BATCH]:
            watcher.wake()
        if start + WAKE_BATCH < len(watchers):
            asyncio.get_running_loop().call_soon(self._wake_from, watchers, start + WAKE_BATCH)

    def _deliver(self, message: ServerMessage) -> None:
        if message.kind == SERVER_CUT_TEXT:
            return
        if message.cursor is not None:
            self._cursor = message.cursor
        if message.size is not None:
            self._size = message.size
        full = message.painted >= self._size[0] * self._size[1]
        if full:
            self._full_asked_at = None
        for watcher in self._watchers:
            if watcher.pending:
                if not full:
                    continue
                watcher.pending = False
                if self._cursor is not None and message.cursor is None:
                    watcher.push(self._cursor)
            watcher.push(message.data)


OpenUpstream = Callable[[], Awaitable[Upstream]]


class SessionFeeds:
    """The feeds of this edge, by session and key."""

    def __init__(self, metrics: EdgeMetrics) -> None:
        self._metrics = metrics
        self._feeds: dict[str, dict[FeedKey, Feed]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def server_init(
        self, session_id: str, open_upstream: OpenUpstream
    ) -> tuple[bytes, Upstream | None]:
        """ServerInit for a new watcher, and the upstream opened for it if the
        session had no feed here (UpstreamError if it cannot be opened)."""
        for feed in self._feeds.get(session_id, {}).values():
            return feed.server_init, None
        upstream = await open_upstream()
        return upstream.init.raw, upstream

    async def join(
        self,
        session_id: str,
        key: FeedKey,
        watcher: Watcher,
        open_upstream: OpenUpstream,
        spare: Upstream | None = None,
    ) -> None:
        """Add `watcher` to the session's feed for `key`, started if need be."""
        lock = self._locks.setdefault(session_id, asyncio.Lock())
        try:
            async with lock:
                feeds = self._feeds.setdefault(session_id, {})
                feed = feeds.get(key)
                if feed is None:
                    upstream, spare = spare or await open_upstream(), None
                    feed = feeds[key] = Feed(session_id, key, upstream, self._forget)
                    self._metrics.stream_feeds += 1
                    try:
                        await feed.start()
                    except ConnectionClosed:
                        self._forget(feed)
                        await upstream.connection.close()
                        raise
                if watcher.feed is not None:
                    watcher.feed.remove(watcher)
                await feed.add(watcher)
        finally:
            if spare is not None:
                await spare.connection.close()
            self._tidy(session_id)

    def _forget(self, feed: Feed) -> None:
        """A feed has ended (called once or more)."""
        if not feed.ended:
            feed.ended = True
            self._metrics.stream_feeds -= 1
        feeds = self._feeds.get(feed.session_id, {})
        if feeds.get(feed.key) is feed:
            del feeds[feed.key]
        self._tidy(feed.session_id)

    def _tidy(self, session_id: str) -> None:
        """Nothing kept for a session without feeds here."""
        if not self._feeds.get(session_id):
            self._feeds.pop(session_id, None)
            lock = self._locks.get(session_id)
            if lock is not None and not lock.locked():
                del self._locks[session_id]
