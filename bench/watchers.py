"""Watch-only viewers for figure 2.7: `python -m bench.watchers EDGE_URL SESSION_ID COUNT`.

The bench user's token comes in the environment (BENCH_TOKEN). Each watcher
asks the edge for a watch-only stream URL (`?watch=true`) just before it
connects (a stream URL is single-use and short-lived), then does what noVNC
does on connecting: the RFB handshake, noVNC's pixel format and encodings, one
full update request; then an incremental request each time bytes arrive
(needed by a direct upstream, harmless to a fan-out that pushes). It counts
the bytes it receives and decodes nothing. Watchers open BATCH at a time, to
bound this process's CPU; "ready" once every one has received bytes.

Then, one line on stdin each: "mark" (answers "marked") starts counting anew;
"count" answers a JSON line, {"watchers", "closed", "min_bytes_since_mark",
"total_bytes"}; end of input disconnects them all. A watcher that fails before
"ready" prints "failed: <why>" and exits with status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import struct
import sys
from dataclasses import dataclass, field

import aiohttp

from baton.client import ApiError, BatonClient
from services.display.rfb_client import BGRX32, RfbClient, RfbError, open_rfb

BATCH = 50
OPEN_TIMEOUT_S = 60.0

# noVNC's SetEncodings (core/rfb.js, `_sendEncodings`, at 24-bit depth), in its
# order: CopyRect, Tight, TightPNG, ZRLE, JPEG, Hextile, RRE, Zlib, Raw, then
# the pseudo-encodings. Two are left out: H264 (only with WebCodecs) and Fence
# with ContinuousUpdates, which a client must answer (fences) or follow; one
# that does neither would stall TigerVNC's congestion control.
NOVNC_ENCODINGS = (1, 7, -260, 16, 21, 5, 2, 6, 0)
NOVNC_PSEUDO_ENCODINGS = (
    -223,  # DesktopSize
    -224,  # LastRect
    -258,  # QEMUExtendedKeyEvent
    -261,  # QEMULedEvent
    -308,  # ExtendedDesktopSize
    -309,  # Xvp
    -307,  # DesktopName
    0xC0A1E5CE,  # ExtendedClipboard
    -316,  # ExtendedMouseButtons
    0x574D5664,  # VMwareCursor
    -239,  # Cursor
)
QUALITY_LEVEL_0 = -32
COMPRESS_LEVEL_0 = -256


def novnc_encodings(quality: int = 6, compression: int = 2) -> list[int]:
    """noVNC's encodings at its default JPEG quality (6) and compression level (2)."""
    return [
        *NOVNC_ENCODINGS,
        QUALITY_LEVEL_0 + quality,
        COMPRESS_LEVEL_0 + compression,
        *NOVNC_PSEUDO_ENCODINGS,
    ]


def set_encodings(encodings: list[int]) -> bytes:
    """The SetEncodings message (RFC 6143 7.5.2); encodings are signed 32-bit."""
    return struct.pack(">BxH", 2, len(encodings)) + b"".join(
        struct.pack(">I", encoding & 0xFFFFFFFF) for encoding in encodings
    )


def set_pixel_format() -> bytes:
    """noVNC's pixel format: 32 bpp, depth 24, little endian, true colour, shifts 16/8/0."""
    return b"\x00\x00\x00\x00" + BGRX32.pack()


@dataclass
class Watcher:
    total: int = 0
    at_mark: int = 0
    closed: bool = False
    # Why it stopped before its first bytes, if it did.
    error: str | None = None
    # Set on its first bytes, or when it stops before them.
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def received(self, size: int) -> None:
        self.total += size
        self.settled.set()


async def watch(client: RfbClient, watcher: Watcher) -> None:
    await client.handshake(shared=True)
    await client.send(set_pixel_format() + set_encodings(novnc_encodings()))
    await client.request_update(incremental=False)
    while True:
        watcher.received(len(await client.receive()))
        await client.request_update(incremental=True)


async def run_watcher(baton: BatonClient, session_id: str, watcher: Watcher) -> None:
    try:
        stream = await baton.get_stream_url(session_id, watch=True)
        async with open_rfb(stream["url"], open_timeout=OPEN_TIMEOUT_S) as client:
            await watch(client, watcher)
    except (RfbError, ApiError, aiohttp.ClientError) as exc:
        # After its first bytes, a closed watcher is only counted ("closed").
        if not watcher.total:
            watcher.error = str(exc)
    finally:
        watcher.closed = True
        watcher.settled.set()


async def open_batch(watchers: list[Watcher]) -> None:
    """Until each of `watchers` has received bytes; a watcher that failed raises."""
    async with asyncio.timeout(OPEN_TIMEOUT_S):
        await asyncio.gather(*(watcher.settled.wait() for watcher in watchers))
    for watcher in watchers:
        if not watcher.total:
            raise RfbError(f"a watcher got no bytes: {watcher.error or 'closed'}")


def counts(watchers: list[Watcher]) -> dict[str, int]:
    return {
        "watchers": len(watchers),
        "closed": sum(watcher.closed for watcher in watchers),
        "min_bytes_since_mark": min(watcher.total - watcher.at_mark for watcher in watchers),
        "total_bytes": sum(watcher.total for watcher in watchers),
    }


def allow_open_files(wanted: int) -> None:
    """Raise the soft limit on open files to `wanted` (at most the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


async def main(edge_url: str, session_id: str, count: int, token: str) -> int:
    # A WebSocket a watcher, aiohttp's pool (at most 100) and Python's own.
    allow_open_files(count + 256)
    watchers = [Watcher() for _ in range(count)]
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession() as http:
        baton = BatonClient(edge_url, token, http=http)
        try:
            for start in range(0, count, BATCH):
                batch = watchers[start : start + BATCH]
                tasks += [
                    asyncio.create_task(run_watcher(baton, session_id, watcher))
                    for watcher in batch
                ]
                await open_batch(batch)
            print("ready", flush=True)
            while line := await asyncio.to_thread(sys.stdin.readline):
                if line.strip() == "mark":
                    for watcher in watchers:
                        watcher.at_mark = watcher.total
                    print("marked", flush=True)
                elif line.strip() == "count":
                    print(json.dumps(counts(watchers)), flush=True)
            return 0
        except (RfbError, TimeoutError) as exc:
            print(f"failed: {type(exc).__name__}: {exc}", flush=True)
            return 1
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    edge, session, how_many = sys.argv[1:4]
    sys.exit(asyncio.run(main(edge, session, int(how_many), os.environ["BENCH_TOKEN"])))
