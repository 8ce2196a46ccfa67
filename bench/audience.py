"""Figure 2.7 (issue 16, figure 7): audiences, hundreds of watch-only viewers on one session.

For each audience size N, N watch-only viewers (`bench/watchers.py`, a process
of their own) watch the session while its controller (a normal stream, the
Python viewer of figure 1) measures key to pixel. Then, still connected: the
edge's PSS, and at the worker the display service's children (the host's
websockify and its per-connection forks, the slot's Xvnc: the bench stack has
this one session only), their number and PSS; and the bytes each watcher
received after the controller's first press, the proof that all of them were
live (the minimum over the watchers). See bench/README.md, "2.7".
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from bench.latency import presses, viewer_process
from bench.proc_stats import category, describe, pss_kib, tree
from bench.stack import BenchStack
from bench.stats import ratio, summary_ms
from bench.viewer import open_viewer

# Opening 500 watchers, 50 at a time, on a loaded two-core machine.
READY_TIMEOUT_S = 600.0


def edge_pss_mib(stack: BenchStack) -> float:
    return round(sum(pss_kib(pid) for pid in tree(stack.processes["edge"].pid)) / 1024, 1)


def worker_side(stack: BenchStack) -> dict[str, Any]:
    """The display service's children: how many, their PSS, and by kind."""
    display = stack.processes["display"].pid
    processes: dict[str, int] = {}
    pss: dict[str, float] = {}
    for pid in tree(display)[1:]:
        described = describe(pid)
        if described is None:
            continue
        kind = category(*described)
        processes[kind] = processes.get(kind, 0) + 1
        pss[kind] = pss.get(kind, 0.0) + pss_kib(pid) / 1024
    return {
        "processes": sum(processes.values()),
        "pss_mib": round(sum(pss.values()), 1),
        "processes_by_kind": processes,
        "pss_mib_by_kind": {kind: round(value, 1) for kind, value in pss.items()},
    }


async def ask(process: asyncio.subprocess.Process, command: str) -> str:
    """One line to the watchers, one line back."""
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(command.encode() + b"\n")
    await process.stdin.drain()
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    if not line:
        raise RuntimeError(f"the watchers' process ended (status {await process.wait()})")
    return line.decode().strip()


async def with_audience(
    stack: BenchStack, session_id: str, watchers: int, samples: int
) -> dict[str, Any]:
    """The controller's key to pixel and the memory, with `watchers` watch-only viewers."""
    env = {**os.environ, "BENCH_TOKEN": stack.token}
    async with viewer_process(
        "bench.watchers",
        stack.edge_url,
        session_id,
        str(watchers),
        env=env,
        ready_timeout_s=READY_TIMEOUT_S,
    ) as process:
        async with open_viewer(await stack.stream_url(session_id)) as controller:
            await controller.next_update()
            if await ask(process, "mark") != "marked":
                raise RuntimeError("the watchers did not answer")
            result: dict[str, Any] = {"controller": summary_ms(await presses(controller, samples))}
            result["edge_pss_mib"] = edge_pss_mib(stack)
            result["worker"] = worker_side(stack)
        seen = json.loads(await ask(process, "count"))
    result["watchers"] = seen["watchers"]
    result["watchers_closed"] = seen["closed"]
    result["watcher_min_bytes_after_presses"] = seen["min_bytes_since_mark"]
    result["watcher_bytes_total"] = seen["total_bytes"]
    return result


def per_added(values: dict[int, float]) -> float | None:
    """What each watcher added between the smallest and the largest audience."""
    first, last = min(values), max(values)
    if first == last:
        return None
    return round((values[last] - values[first]) / (last - first), 3)


def summarise(by_count: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The figure: ratios and per-watcher costs from the measurements at each N."""
    first, last = min(by_count), max(by_count)
    return {
        "ratio_p50": ratio(
            by_count[last]["controller"].get("p50"), by_count[first]["controller"].get("p50")
        ),
        "edge_mib_per_watcher": per_added(
            {count: figures["edge_pss_mib"] for count, figures in by_count.items()}
        ),
        "worker_mib_per_watcher": per_added(
            {count: figures["worker"]["pss_mib"] for count, figures in by_count.items()}
        ),
        "worker_processes_per_watcher": per_added(
            {count: figures["worker"]["processes"] for count, figures in by_count.items()}
        ),
        "worker_processes": {
            str(count): figures["worker"]["processes"] for count, figures in by_count.items()
        },
        "watcher_min_bytes_after_presses": min(
            figures["watcher_min_bytes_after_presses"] for figures in by_count.values()
        ),
    }


async def audiences(
    stack: BenchStack, session_id: str, counts: tuple[int, ...], samples: int
) -> dict[str, Any]:
    """Figure 2.7 at each audience size in `counts`."""
    by_count = {
        watchers: await with_audience(stack, session_id, watchers, samples) for watchers in counts
    }
    return {**{str(count): figures for count, figures in by_count.items()}, **summarise(by_count)}
