"""Figure 2: session start, POST until a viewer sees the page; and the bare cold start."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.key_page import KeyPage
from bench.latency import wait_for_page
from bench.stack import BenchStack
from bench.stats import summary_ms
from bench.viewer import open_viewer


async def one_start(stack: BenchStack, page: KeyPage) -> tuple[float, float, str]:
    """Seconds from POST to its answer and to the first update showing the page."""
    began = time.perf_counter()
    session_id = await stack.create(page.url)
    answered = time.perf_counter()
    async with open_viewer(await stack.stream_url(session_id)) as viewer:
        await wait_for_page(viewer)
        seen = time.perf_counter()
    return seen - began, answered - began, session_id


async def starts(stack: BenchStack, page: KeyPage, count: int) -> dict[str, Any]:
    """`count` sessions one after another, each ended before the next starts."""
    shown: list[float] = []
    answered: list[float] = []
    for _ in range(count):
        if stack.config.warm_slots:
            await asyncio.wait_for(stack.wait_warm(stack.config.warm_slots), 60)
        seconds, post, session_id = await one_start(stack, page)
        shown.append(seconds)
        answered.append(post)
        await stack.end(session_id)
    result = summary_ms(shown)
    # Where the time goes: the POST answers once the slot is ready and the task started.
    result["post_answered"] = summary_ms(answered)
    return result
