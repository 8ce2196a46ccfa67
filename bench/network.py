"""Figure 2.2 (issue 16, figure 2): the viewer over an emulated link.

The viewer's Chromium (noVNC, bench/real_viewer.py) runs in the link's network
namespace (bench/link.py); the stack listens on the link's root end. For each
link profile: key to pixel through the edge and bare at noVNC's default quality
(target: p50 at most the round trip plus 20 ms), then the bytes and frames per
second delivered while the page scrolls, edge and bare, at each quality setting.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench import real_viewer
from bench.key_page import KeyPage
from bench.latency import controlled_session
from bench.link import NAMESPACE, ROOT_ADDRESS, Link, LinkProfile, in_namespace, viewer_link
from bench.stack import BenchStack, StackConfig, running_stack
from services.runtime.processes import require_binary

# After the other stacks, apart from the bare cold start's display (598).
CONFIG = StackConfig(displays=(590, 597), vnc_ports=(18590, 18597), viewer_host=ROOT_ADDRESS)


def chromium_in_namespace(work: Path) -> str:
    """A program Playwright starts as Chromium: Chromium inside the namespace
    (its pipes to Playwright are file descriptors, which cross namespaces)."""
    argv = " ".join(in_namespace([require_binary("chromium", "chromium")]))
    script = work / "chromium-in-namespace"
    script.write_text(f'#!/bin/sh\nexec {argv} "$@"\n')
    script.chmod(0o755)
    return str(script)


@contextlib.asynccontextmanager
async def _linked(work: Path) -> AsyncIterator[tuple[Link, BenchStack, real_viewer.ViewerSide]]:
    async with viewer_link() as link, running_stack(CONFIG, work / "link") as stack:
        side = real_viewer.ViewerSide(ROOT_ADDRESS, chromium_in_namespace(work))
        yield link, stack, side


async def over_links(
    page: KeyPage,
    work: Path,
    profiles: tuple[LinkProfile, ...],
    presses: int,
    scroll_repeats: int,
    qualities: tuple[real_viewer.Quality, ...] = real_viewer.QUALITIES,
) -> dict[str, Any]:
    result: dict[str, Any] = {"namespace": NAMESPACE}
    async with _linked(work) as (link, stack, side):
        session_id = await controlled_session(stack, page, "scroll")
        for profile in profiles:
            await link.shape(profile)
            latency = await real_viewer.edge_vs_bare(
                stack, session_id, presses, qualities[:1], side
            )
            figures = latency[qualities[0].name]
            result[profile.name] = {
                "rtt_ms": profile.rtt_ms,
                "rate_mbit": profile.rate_mbit,
                "key_to_pixel": figures,
                "edge_p50_over_rtt_ms": round(figures["edge"]["p50"] - profile.rtt_ms, 2),
                "scroll": await real_viewer.scroll_traffic(
                    stack, session_id, scroll_repeats, qualities, side
                ),
            }
        await link.stop()
        await stack.end(session_id)
    return result
