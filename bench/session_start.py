"""Figure 2: session start, POST until a viewer sees the page; and the bare cold start."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.key_page import KeyPage
from bench.latency import wait_for_page
from bench.stack import BenchStack
from bench.stats import ratio, summary_ms
from bench.viewer import open_viewer

# Where a start's time goes, each from the POST (seconds): the answer, the viewer's
# first update, and the page's own navigation start, load and next frame.
MILESTONES = ("post_answered", "viewer_first_update", "navigation_start", "load", "frame")
PAINTED_TIMEOUT_S = 10.0


async def one_start(stack: BenchStack, page: KeyPage) -> tuple[float, dict[str, float], str]:
    """Seconds from POST until a viewer sees the page; the milestones; the session."""
    reports = len(page.painted)
    began, began_epoch = time.perf_counter(), time.time()
    session_id = await stack.create(page.url)
    answered = time.perf_counter()
    async with open_viewer(await stack.stream_url(session_id)) as viewer:
        await viewer.next_update()
        first_update = time.perf_counter()
        await wait_for_page(viewer)
        seen = time.perf_counter()
    painted = await asyncio.wait_for(page.next_painted(reports), PAINTED_TIMEOUT_S)
    milestones = {
        "post_answered": answered - began,
        "viewer_first_update": first_update - began,
        **{name: painted[name] - began_epoch for name in MILESTONES[2:]},
    }
    return seen - began, milestones, session_id


async def starts(stack: BenchStack, page: KeyPage, count: int) -> dict[str, Any]:
    """`count` sessions one after another, each ended before the next starts."""
    shown: list[float] = []
    milestones: dict[str, list[float]] = {name: [] for name in MILESTONES}
    for _ in range(count):
        if stack.config.warm_slots:
            await asyncio.wait_for(stack.wait_warm(stack.config.warm_slots), 60)
        seconds, reached, session_id = await one_start(stack, page)
        shown.append(seconds)
        for name, at in reached.items():
            milestones[name].append(at)
        await stack.end(session_id)
    result = summary_ms(shown)
    # Where the time goes: the POST answers once the slot is ready and the task started.
    result.update({name: summary_ms(samples) for name, samples in milestones.items()})
    return result


async def join(url: str, password: str = "") -> float:
    """Seconds from connecting a viewer to `url` to its first full frame."""
    began = time.perf_counter()
    async with open_viewer(url, password=password) as viewer:
        covered = 0
        while covered < viewer.width * viewer.height:
            painted = await viewer.client.read_update(viewer.pixels)
            covered += sum(rect.width * rect.height for rect in painted)
            if covered < viewer.width * viewer.height:
                # Not seen from Xvnc (it answers the first request whole), but
                # never wait on an update nobody asked for.
                await viewer.client.request_update(incremental=False)
    return time.perf_counter() - began


async def viewer_joins(stack: BenchStack, session_id: str, count: int) -> dict[str, Any]:
    """A viewer joining a running session: GET stream, then its first full frame.

    Beside it, the same join on the slot's own websockify (no GET, no edge).
    Alternating, so load falls on both.
    """
    edge: list[float] = []
    bare: list[float] = []
    bare_url, bare_password = await stack.bare_url(session_id)
    for _ in range(count):
        began = time.perf_counter()
        url = await stack.stream_url(session_id)
        edge.append(time.perf_counter() - began + await join(url))
        bare.append(await join(bare_url, bare_password))
    result: dict[str, Any] = {"edge": summary_ms(edge), "bare": summary_ms(bare)}
    result["ratio_p50"] = ratio(result["edge"]["p50"], result["bare"]["p50"])
    return result
