"""Figure 4: sessions one after another, each with an idle page and one viewer,
until the host's knee (issue 16, figure 4).

Stops at the knee (see `knee`: starts slowing down, or a probe session's key to
pixel doubling), when memory available falls under MIN_AVAILABLE_MIB, when a
start fails, or at the cap (the bench's displays). Memory is PSS
(/proc/<pid>/smaps_rollup) of every process under the four services, split
into Chromium, X + VNC, websockify and Baton's own (the services' Python
processes and Playwright's driver).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from typing import Any

from baton.session.v1 import session_pb2
from bench.bare import bare_host
from bench.key_page import KeyPage
from bench.latency import controlled_session, presses, wait_for_page
from bench.proc_stats import (
    cpu_percent,
    cpu_percent_by_category,
    cpu_seconds,
    mem_available_mib,
    pss_by_category,
)
from bench.stack import BenchStack
from bench.stats import ratio, summary_ms
from bench.viewer import keep_reading, open_viewer

# The knee: the median of the last ten starts, or the probe's key-to-pixel p50,
# over this many times its first figure.
KNEE_FACTOR = 2.0
KNEE_WINDOW = 10
# The probe is measured every PROBE_EVERY sessions, PROBE_PRESSES keys each time.
PROBE_EVERY = 10
PROBE_PRESSES = 10
MIN_AVAILABLE_MIB = 3072.0
# Time for a fresh Chromium to settle on an idle page before memory is read.
SETTLE_S = 2.0
# The bare sessions' displays and VNC ports: the bench's, free again once the
# main stack has stopped.
BARE_DISPLAYS = 500
BARE_VNC_PORTS = 18500


def knee(starts: list[float], probe_p50: list[float]) -> str | None:
    """Why the host is past its knee, or None: the last ten starts' median over
    twice the first ten's, or the probe's last key-to-pixel p50 over twice its
    first (taken with no other session)."""
    if len(starts) >= 2 * KNEE_WINDOW:
        first = statistics.median(starts[:KNEE_WINDOW])
        last = statistics.median(starts[-KNEE_WINDOW:])
        if last > KNEE_FACTOR * first:
            return (
                f"start p50 of the last {KNEE_WINDOW} {last:.2f} s, over "
                f"{KNEE_FACTOR:g}x the first {KNEE_WINDOW}' {first:.2f} s"
            )
    if len(probe_p50) >= 2 and probe_p50[-1] > KNEE_FACTOR * probe_p50[0]:
        return (
            f"the probe's key to pixel p50 {probe_p50[-1]:.1f} ms, over "
            f"{KNEE_FACTOR:g}x its idle {probe_p50[0]:.1f} ms"
        )
    return None


def per_session(totals: dict[str, float], sessions: int) -> dict[str, float]:
    shares = {name: round(value / sessions, 1) for name, value in totals.items()}
    shares["total"] = round(sum(totals.values()) / sessions, 1)
    shares["without_baton"] = round(shares["total"] - shares["baton"], 1)
    return shares


async def idle_cpu(roots: list[int], seconds: float) -> tuple[float, dict[str, float]]:
    """CPU over `seconds` in % of one core: in all, and by program."""
    before = cpu_seconds(roots)
    began = time.perf_counter()
    await asyncio.sleep(seconds)
    after, wall_s = cpu_seconds(roots), time.perf_counter() - began
    return cpu_percent(before, after, wall_s), cpu_percent_by_category(before, after, wall_s)


async def probe_p50(stack: BenchStack, probe: str) -> float:
    """The probe session's key to pixel p50 now, in ms, through the edge."""
    async with open_viewer(await stack.stream_url(probe)) as viewer:
        await viewer.next_update()
        samples = await presses(viewer, PROBE_PRESSES)
    return float(summary_ms(samples)["p50"])


async def baton_density(
    stack: BenchStack, page: KeyPage, cap: int, checkpoints: set[int], idle_s: float
) -> dict[str, Any]:
    roots = list(stack.pids().values())
    starts: list[float] = []
    memory: dict[str, Any] = {}
    stopped_by = f"cap of {cap} sessions (the bench's displays)"
    readers: list[asyncio.Task[None]] = []
    sessions: list[str] = []
    # A session under the bench user's control, measured idle and every ten.
    probe = await controlled_session(stack, page)
    probes = [await probe_p50(stack, probe)]
    async with contextlib.AsyncExitStack() as viewers:
        try:
            while len(starts) < cap:
                began = time.perf_counter()
                try:
                    session_id = await stack.create(page.url)
                    viewer = await viewers.enter_async_context(
                        open_viewer(await stack.stream_url(session_id))
                    )
                    await asyncio.wait_for(wait_for_page(viewer), 60)
                except (RuntimeError, TimeoutError, OSError) as exc:
                    stopped_by = f"start {len(starts) + 1} failed: {exc}"
                    break
                starts.append(time.perf_counter() - began)
                sessions.append(session_id)
                readers.append(asyncio.create_task(keep_reading(viewer)))
                count = len(starts)
                if count in checkpoints or count == cap:
                    await asyncio.sleep(SETTLE_S)
                    memory[str(count)] = per_session(pss_by_category(roots), count)
                if count % PROBE_EVERY == 0:
                    probes.append(await probe_p50(stack, probe))
                reason = knee(starts, probes)
                if reason is not None:
                    stopped_by = f"the knee at {count}: {reason}"
                    break
                if mem_available_mib() < MIN_AVAILABLE_MIB:
                    stopped_by = f"memory available under {MIN_AVAILABLE_MIB:g} MiB"
                    break
            count = len(starts)
            await asyncio.sleep(SETTLE_S)
            memory[str(count)] = per_session(pss_by_category(roots), count)
            cpu, cpu_by_program = await idle_cpu(roots, idle_s)
            # Every figure above divides by `count`: each session must still be open.
            ended = [
                s
                for s in sessions
                if (await stack.session(s)).state == session_pb2.CONTROL_STATE_ENDED
            ]
            if ended:
                raise RuntimeError(f"{len(ended)} of {count} sessions ended during figure 4")
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    await stack.end(probe)
    return {
        "sessions": count,
        "stopped_by": stopped_by,
        "start_s": [round(s, 3) for s in starts],
        "start_p50_first_10_s": median_s(starts[:KNEE_WINDOW]),
        "start_p50_last_10_s": median_s(starts[-KNEE_WINDOW:]),
        "probe_p50_ms_every_10": probes,
        "probe_ratio": ratio(probes[-1], probes[0]),
        "pss_mib_per_session": memory,
        "idle_cpu_percent_of_one_core": cpu,
        "idle_cpu_percent_per_session": round(cpu / max(count, 1), 3),
        "idle_cpu_percent_by_program": cpu_by_program,
    }


def median_s(samples: list[float]) -> float | None:
    return round(statistics.median(samples), 3) if samples else None


async def bare_density(
    url: str, count: int, checkpoints: set[int], idle_s: float
) -> dict[str, Any]:
    """The same measurement on `count` bare sessions (displays and ports from 500 / 18500)."""
    memory: dict[str, Any] = {}
    async with bare_host() as host:
        for index in range(count):
            await host.add(BARE_DISPLAYS + index, BARE_VNC_PORTS + index, url)
            if index + 1 in checkpoints or index + 1 == count:
                await asyncio.sleep(SETTLE_S)
                memory[str(index + 1)] = per_session(pss_by_category(host.roots()), index + 1)
        cpu, cpu_by_program = await idle_cpu(host.roots(), idle_s)
    return {
        "sessions": count,
        "pss_mib_per_session": memory,
        "idle_cpu_percent_of_one_core": cpu,
        "idle_cpu_percent_by_program": cpu_by_program,
    }


def marginal(memory: dict[str, Any], first: int, last: int) -> float | None:
    """MiB each session added between `first` and `last` sessions (Baton's fixed part out)."""
    if first == last or str(first) not in memory or str(last) not in memory:
        return None
    added = float(memory[str(last)]["total"]) * last - float(memory[str(first)]["total"]) * first
    return round(added / (last - first), 1)


def compare(baton: dict[str, Any], bare: dict[str, Any]) -> dict[str, Any]:
    """Baton's memory per session over the bare one, at the same session count."""
    count = bare["sessions"]
    by_count = {
        at: ratio(baton["pss_mib_per_session"][at]["total"], memory["total"])
        for at, memory in bare["pss_mib_per_session"].items()
        if at in baton["pss_mib_per_session"]
    }
    baton_memory = baton["pss_mib_per_session"].get(str(count))
    bare_total = bare["pss_mib_per_session"][str(count)]["total"]
    baton_total = baton_memory["total"] if baton_memory else None
    return {
        "at_sessions": count,
        "baton_total_mib": baton_total,
        "bare_total_mib": bare_total,
        "ratio": ratio(baton_total, bare_total),
        "ratio_by_sessions": by_count,
        "baton_marginal_mib": marginal(baton["pss_mib_per_session"], 1, count),
        "bare_marginal_mib": marginal(bare["pss_mib_per_session"], 1, count),
    }
