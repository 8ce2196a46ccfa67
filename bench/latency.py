"""Figures 1 and 5: input-to-pixel latency, through the edge and bare; fan-out.

A key press goes out on the viewer's connection; the time is taken when the
framebuffer update that changes the page's square arrives on that connection.
The two paths are measured in alternating blocks against the same slot, so
drift in the machine's load falls on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
from collections.abc import AsyncIterator
from typing import Any

from bench.key_page import LOADED_RGB, KeyPage, square_centre
from bench.stack import BenchStack
from bench.stats import ratio, summary_ms
from bench.viewer import Viewer, near, open_viewer

KEY_A = ord("a")
BLOCK = 10
PRESS_TIMEOUT_S = 5.0


async def controlled_session(stack: BenchStack, page: KeyPage, path: str = "") -> str:
    """A session on the key page (or the page at `path`, with the same square),
    under the bench user's control."""
    session_id = await stack.create(page.url + path)
    async with open_viewer(await stack.stream_url(session_id)) as viewer:
        await wait_for_page(viewer)
        await stack.control(session_id, "take_control")
        await focus_page(viewer)
    return session_id


async def wait_for_page(viewer: Viewer) -> None:
    x, y = square_centre(viewer.width, viewer.height)
    await asyncio.wait_for(viewer.wait_for(lambda v: near(v.rgb(x, y), LOADED_RGB)), 60)


async def focus_page(viewer: Viewer) -> None:
    """Click on the page, as a user would, so keys go to it and not to the address bar.

    The pointer stays there, far from the square whose pixels are sampled.
    """
    await viewer.click(viewer.width // 4, viewer.height // 2)
    # The click's own repaint (focus) must not be taken for a key's.
    await asyncio.sleep(0.3)


async def presses(viewer: Viewer, count: int) -> list[float]:
    x, y = square_centre(viewer.width, viewer.height)
    samples = []
    for _ in range(count):
        samples.append(await asyncio.wait_for(viewer.key_to_pixel(KEY_A, x, y), PRESS_TIMEOUT_S))
        # Decorrelate from the display's update timing, and let the page settle.
        await asyncio.sleep(random.uniform(0.02, 0.05))
    return samples


async def edge_vs_bare(stack: BenchStack, session_id: str, count: int) -> dict[str, Any]:
    edge: list[float] = []
    bare: list[float] = []
    bare_url, bare_password = await stack.bare_url(session_id)
    while len(edge) < count:
        block = min(BLOCK, count - len(edge))
        async with open_viewer(await stack.stream_url(session_id)) as viewer:
            await viewer.next_update()
            edge += await presses(viewer, block)
        async with open_viewer(bare_url, password=bare_password) as viewer:
            await viewer.next_update()
            bare += await presses(viewer, block)
    result: dict[str, Any] = {"edge": summary_ms(edge), "bare": summary_ms(bare)}
    result["ratio_p50"] = ratio(result["edge"]["p50"], result["bare"]["p50"])
    result["ratio_p99"] = ratio(result["edge"]["p99"], result["bare"]["p99"])
    return result


@contextlib.asynccontextmanager
async def viewer_process(
    module: str, *args: str, env: dict[str, str] | None = None, ready_timeout_s: float = 120
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m module args...`, a process of viewers: once it prints "ready";
    closing its stdin at the end tells it to disconnect them."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), ready_timeout_s)
        if line.strip() != b"ready":
            raise RuntimeError(f"{module} did not start: {line.decode(errors='replace')!r}")
        yield process
    finally:
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


@contextlib.asynccontextmanager
async def passive_viewers(urls: list[str]) -> AsyncIterator[None]:
    """A viewer per stream URL (each is single-use), in a process of their own."""
    if not urls:
        yield
        return
    async with viewer_process("bench.passive_viewers", *urls):
        yield


async def fan_out(
    stack: BenchStack, session_id: str, counts: tuple[int, ...], samples: int
) -> dict[str, Any]:
    """The controller's key-to-pixel latency with 1, 10, 50 viewers on the session."""
    result: dict[str, Any] = {}
    for viewers in counts:
        async with (
            passive_viewers([await stack.stream_url(session_id) for _ in range(viewers - 1)]),
            open_viewer(await stack.stream_url(session_id)) as controller,
        ):
            await controller.next_update()
            result[str(viewers)] = summary_ms(await presses(controller, samples))
    single = result[str(counts[0])].get("p50")
    result["ratio_p50"] = ratio(result[str(counts[-1])].get("p50"), single)
    return result
