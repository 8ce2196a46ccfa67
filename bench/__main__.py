"""`make bench`: the figures of issues 6, 10 and 16 on loopback, beside the bare stack.

    python -m bench [--smoke] [--out FILE] [--only 1,2,...,2.1,2.6]

Issue 16's figures are "2.N" (second round): 2.1 through noVNC, 2.6 a viewer joining,
2.7 audiences of watch-only viewers.

Prints a table with each target beside its figure and writes every number as
JSON (default bench/results/<date>.json; the smoke run writes only with --out).
See bench/README.md for what each figure means and how it is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    audience,
    density,
    handoff,
    latency,
    network,
    real_viewer,
    session_start,
    under_load,
)
from bench.bare import cold_start
from bench.cluster import cluster_figures
from bench.control_plane import control_plane
from bench.key_page import KeyPage, key_page
from bench.plan import FULL, SMOKE, TARGETS, Plan
from bench.session_plane import session_plane
from bench.stack import BenchStack, StackConfig, running_stack
from bench.stats import ratio, summary_ms

RESULTS = Path(__file__).parent / "results"
# Above the targets in the table; issue 16's figures are "2.N".
TARGETS_HEADING = "targets (issue 6; 2.N: issue 16's figure N)"


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    memory_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def loadavg() -> list[float]:
    return [float(part) for part in Path("/proc/loadavg").read_text().split()[:3]]


def lookup(results: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = results
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, int | float) else None


def table(results: dict[str, Any]) -> list[str]:
    """The figures, one line each, with the target beside it where there is one."""
    lines = [f"{'figure':<6} {'measure':<44} {'value':>10} {'target':>10}  met"]

    def add(figure: str, what: str, value: float | None, unit: str = "ms") -> None:
        shown = "-" if value is None else f"{value:.2f}{unit}"
        lines.append(f"{figure:<6} {what:<44} {shown:>10}")

    for backend, figures in results.get("latency", {}).items():
        for path in ("edge", "bare"):
            for stat in ("p50", "p90", "p99"):
                add("1", f"key to pixel {backend} {path} {stat}", figures[path].get(stat))
    for quality, figures in results.get("real_viewer", {}).items():
        for path in ("edge", "bare"):
            for stat in ("p50", "p90", "p99"):
                add("2.1", f"noVNC {quality} {path} {stat}", figures[path].get(stat))
    for viewer, joins in results.get("viewer_join", {}).items():
        for path in ("edge", "bare", "watch"):
            if path not in joins:
                continue
            for stat in ("p50", "p99"):
                add("2.6", f"viewer join, {viewer}, {path} {stat}", joins[path].get(stat))
    starts = results.get("session_start", {})
    for kind in ("cold", "warm", "bare_cold"):
        for stat in ("p50", "p99"):
            add("2", f"session start {kind} {stat}", starts.get(kind, {}).get(stat))
        for milestone in session_start.MILESTONES:
            if milestone in starts.get(kind, {}):
                label = f"  {milestone.replace('_', ' ')}, {kind} p50"
                add("2", label, starts[kind][milestone]["p50"])
    handoffs = results.get("handoff", {})
    for name, label in (
        ("take_control_to_first_key", "take_control to first user key"),
        ("take_control_put", "take_control PUT answered"),
        ("return_control_to_next_step", "return_control to next agent step"),
    ):
        for stat in ("p50", "p99"):
            add("3", f"{label} {stat}", handoffs.get(name, {}).get(stat))
    dense = results.get("density", {})
    if "baton" in dense:
        baton = dense["baton"]
        add("4", f"sessions reached ({baton['stopped_by']})"[:44], baton["sessions"], "")
        add("4", "start p50, first 10 sessions", baton.get("start_p50_first_10_s"), "s")
        add("4", "start p50, last 10 sessions", baton.get("start_p50_last_10_s"), "s")
        probes = baton.get("probe_p50_ms_every_10") or [None]
        add("4", "probe key to pixel p50, alone", probes[0])
        add("4", "probe key to pixel p50, at the end", probes[-1])
        last = baton["pss_mib_per_session"][str(baton["sessions"])]
        for part in ("total", "chromium", "x_vnc", "websockify", "baton"):
            add("4", f"PSS/session at {baton['sessions']}: {part}", last[part], "M")
        add("4", "idle CPU, all sessions (% of a core)", baton["idle_cpu_percent_of_one_core"], "")
        for part, value in baton.get("idle_cpu_percent_by_program", {}).items():
            add("4", f"idle CPU: {part}", value, "")
    if "bare" in dense:
        bare = dense["bare"]
        versus = dense.get("versus_bare", {})
        at = versus.get("at_sessions")
        add("4", f"bare PSS/session at {at}", versus.get("bare_total_mib"), "M")
        add("4", f"Baton PSS/session at {at}", versus.get("baton_total_mib"), "M")
        add("4", f"bare PSS added per session, 1 to {at}", versus.get("bare_marginal_mib"), "M")
        add("4", f"Baton PSS added per session, 1 to {at}", versus.get("baton_marginal_mib"), "M")
        for count, value in versus.get("ratio_by_sessions", {}).items():
            add("4", f"Baton/bare PSS per session at {count}", value, "x")
        add(
            "4",
            "bare idle CPU, all sessions (% of a core)",
            bare["idle_cpu_percent_of_one_core"],
            "",
        )
        for part, value in bare.get("idle_cpu_percent_by_program", {}).items():
            add("4", f"bare idle CPU: {part}", value, "")
    for viewers, figures in results.get("fan_out", {}).items():
        if isinstance(figures, dict):
            add("5", f"controller key to pixel p50, {viewers} viewers", figures.get("p50"))
    for watchers, figures in results.get("audience", {}).items():
        if isinstance(figures, dict) and "controller" in figures:
            at = f"{watchers} watchers"
            add("2.7", f"controller key to pixel p50, {at}", figures["controller"].get("p50"))
            add("2.7", f"edge PSS, {at}", figures["edge_pss_mib"], "M")
            add("2.7", f"worker PSS, {at}", figures["worker"]["pss_mib"], "M")
            add("2.7", f"worker processes, {at}", figures["worker"]["processes"], "")
            add(
                "2.7",
                f"  least bytes a watcher got, {at}",
                figures["watcher_min_bytes_after_presses"],
                "",
            )
    if "audience" in results:
        add("2.7", "edge MiB per added watcher", results["audience"]["edge_mib_per_watcher"], "M")
    for profile, figures in results.get("network", {}).items():
        if not isinstance(figures, dict):
            continue
        keys = figures["key_to_pixel"]
        add("2.2", f"{profile}: key to pixel p50 edge", keys["edge"].get("p50"))
        add("2.2", f"{profile}: key to pixel p50 bare", keys["bare"].get("p50"))
        for quality, scroll in figures["scroll"].items():
            for path in ("edge", "bare"):
                add(
                    "2.2",
                    f"{profile} scroll {quality} {path} kB/s",
                    scroll[path]["kbytes_per_s"],
                    "",
                )
                add(
                    "2.2",
                    f"{profile} scroll {quality} {path} fps",
                    scroll[path]["frames_per_s"],
                    "",
                )
    for load, figures in results.get("under_load", {}).items():
        if isinstance(figures, dict):
            add("2.3", f"probe key to pixel p50, {load} busy agents", figures.get("p50"))
            steps = figures.get("agent_steps_per_s")
            add("2.3", f"  their steps per second, {load} busy", steps, "")
    for store, figures in results.get("control_plane", {}).items():
        add("6", f"ChangeControl {store} p50", figures.get("p50"))
        add("6", f"ChangeControl {store} p99", figures.get("p99"))
        add("6", f"ChangeControl {store} throughput (/s)", figures.get("per_second"), "")
    for scale, figures in results.get("session_plane", {}).items():
        if isinstance(figures, dict):
            add("7", f"create p50, {scale} (hosts x sessions)", figures["create"].get("p50"))
            add("7", f"create p99, {scale}", figures["create"].get("p99"))
            add("7", f"creates per second, {scale}", figures["creates_per_second"], "")
            add("7", f"list all pages, {scale}", figures["list_all_pages_ms"])
            add("7", f"service memory growth, {scale}", figures["rss_growth_mib"], "M")
    cluster = results.get("cluster", {})
    if cluster:
        creates = cluster["creates"]
        add("8", f"cluster: {creates['sessions']} creates at once, p50", creates.get("p50"))
        add("8", "cluster: create p99", creates.get("p99"))
        add("8", "cluster: sessions created per second", creates["per_second"], "")
        failover = cluster["failover"]
        add("8", f"failover, host killed to told, p50 (n={failover['n']})", failover.get("p50"))
        add("8", "failover, max", failover.get("max"))
    lines.append("")
    lines.append(TARGETS_HEADING)
    for target in TARGETS:
        value = lookup(results, target.path)
        met = target.met(value)
        sign = ">=" if target.at_least else "<="
        shown = "-" if value is None else f"{value:.2f}{target.unit}"
        verdict = {True: "yes", False: "NO", None: "-"}[met]
        lines.append(
            f"{target.figure:<6} {target.what:<44} {shown:>10} "
            f"{sign + format(target.limit, 'g') + target.unit:>10}  {verdict}"
        )
    return lines


async def run(plan: Plan, only: set[str], work: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}

    def wanted(figure: str) -> bool:
        return not only or figure in only

    def note(message: str) -> None:
        print(f"bench: {message} (load {' '.join(map(str, loadavg()))})", flush=True)

    async with key_page() as page:
        if wanted("6"):
            note("figure 6, control plane")
            results["control_plane"] = await control_plane(
                plan.control_clients, plan.control_cycles
            )
        if wanted("7"):
            note("figure 7, session plane at scale")
            results["session_plane"] = await session_plane(plan.plane_scales)
        if wanted("8"):
            note("figure 8, the cluster")
            results["cluster"] = await cluster_figures(plan.cluster_sessions, plan.cluster_kills)
        if wanted("2"):
            note("figure 2, bare cold start")
            samples = [await cold_start(598, 18598, page.url) for _ in range(plan.bare_starts)]
            results.setdefault("session_start", {})["bare_cold"] = summary_ms(samples)
            note("figure 2, warm start")
            warm = StackConfig(warm_slots=2, displays=(550, 569), vnc_ports=(18550, 18569))
            async with running_stack(warm, work / "warm") as stack:
                results["session_start"]["warm"] = await session_start.starts(
                    stack, page, plan.starts
                )
        if wanted("1"):
            note("figure 1, xvfb-x11vnc")
            x11vnc = StackConfig(
                backend="xvfb-x11vnc", displays=(570, 589), vnc_ports=(18570, 18589)
            )
            async with running_stack(x11vnc, work / "x11vnc") as stack:
                session_id = await latency.controlled_session(stack, page)
                results.setdefault("latency", {})["xvfb-x11vnc"] = await latency.edge_vs_bare(
                    stack, session_id, plan.presses
                )
        if wanted("2.2"):
            note("figure 2.2, the viewer over an emulated link")
            results["network"] = await network.over_links(
                page, work, plan.link_profiles, plan.link_presses, plan.scroll_repeats
            )
        # Every bench display: the other stacks have stopped.
        main = StackConfig(
            max_slots=plan.density_cap + 4, displays=(500, 599), vnc_ports=(18500, 18599)
        )
        async with running_stack(main, work / "main") as stack:
            await run_main_stack(stack, page, plan, wanted, note, results)
        starts = results.get("session_start", {})
        if "cold" in starts and "bare_cold" in starts:
            starts["cold_vs_bare_p50"] = ratio(starts["cold"]["p50"], starts["bare_cold"]["p50"])
        if density_wanted(wanted):
            note("figure 4 (2.5), bare density")
            reached = min(results["density"]["baton"]["sessions"], plan.bare_density_cap)
            checkpoints = set(plan.density_checkpoints)
            bare = await density.bare_density(page.url, reached, checkpoints, plan.idle_cpu_s)
            results["density"]["bare"] = bare
            results["density"]["versus_bare"] = density.compare(results["density"]["baton"], bare)
    return results


def density_wanted(wanted: Callable[[str], bool]) -> bool:
    """Figures 4, 2.4 and 2.5 are one measurement."""
    return any(wanted(figure) for figure in ("4", "2.4", "2.5"))


async def run_main_stack(
    stack: BenchStack,
    page: KeyPage,
    plan: Plan,
    wanted: Callable[[str], bool],
    note: Callable[[str], None],
    results: dict[str, Any],
) -> None:
    """The figures on the default stack (xvnc, no warm pool), density last."""
    if wanted("2"):
        note("figure 2, cold start")
        results.setdefault("session_start", {})["cold"] = await session_start.starts(
            stack, page, plan.starts
        )
    if any(wanted(figure) for figure in ("1", "5", "2.1", "2.6", "2.7")):
        session_id = await latency.controlled_session(stack, page)
        if wanted("2.1"):
            note("figure 2.1, key to pixel through noVNC")
            results["real_viewer"] = await real_viewer.edge_vs_bare(
                stack, session_id, plan.real_viewer_presses
            )
        if wanted("2.6"):
            note("figure 2.6, a viewer joining a running session")
            results["viewer_join"] = {
                "novnc": await real_viewer.joins(stack, session_id, plan.joins),
                "python_raw": await session_start.viewer_joins(stack, session_id, plan.joins),
            }
        if wanted("1"):
            note("figure 1, xvnc")
            results.setdefault("latency", {})["xvnc"] = await latency.edge_vs_bare(
                stack, session_id, plan.presses
            )
        if wanted("5"):
            note("figure 5, fan-out")
            results["fan_out"] = await latency.fan_out(
                stack, session_id, plan.fan_out, plan.fan_out_presses
            )
        if wanted("2.7"):
            note("figure 2.7, watch-only audiences")
            results["audience"] = await audience.audiences(
                stack, session_id, plan.audiences, plan.audience_presses
            )
        await stack.end(session_id)
    if wanted("3"):
        note("figure 3, handoff")
        results["handoff"] = await handoff.handoffs(stack, page, plan.handoffs)
    if wanted("2.3"):
        note("figure 2.3, key to pixel while other agents work")
        results["under_load"] = await under_load.latency_under_load(
            stack, page, plan.busy_loads, plan.under_load_presses
        )
    if density_wanted(wanted):
        note("figure 4 (2.4, 2.5), density")
        checkpoints = set(plan.density_checkpoints)
        results["density"] = {
            "baton": await density.baton_density(
                stack, page, plan.density_cap, checkpoints, plan.idle_cpu_s
            )
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few iterations of each figure")
    parser.add_argument("--out", type=Path, help="where to write the JSON results")
    parser.add_argument("--only", default="", help="comma-separated figures, e.g. 1,5")
    args = parser.parse_args()
    plan = SMOKE if args.smoke else FULL
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    started = datetime.datetime.now(datetime.UTC)
    load_before = loadavg()
    work = Path(tempfile.mkdtemp(prefix="baton-bench-"))
    # Searchable (not listable) by others: each browser runs as its display's own
    # user and goes through it to its profile (services/automation/browser_user.py).
    work.chmod(0o711)
    began = time.monotonic()
    try:
        figures = asyncio.run(run(plan, only, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "date": started.isoformat(timespec="seconds"),
        "mode": "smoke" if args.smoke else "full",
        "plan": dataclasses.asdict(plan),
        "machine": machine(),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "duration_s": round(time.monotonic() - began, 1),
        **figures,
    }
    print()
    print("\n".join(table(results)))
    out = args.out
    if out is None and not args.smoke:
        out = RESULTS / f"{started.date().isoformat()}.json"
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nresults written to {out}")


if __name__ == "__main__":
    main()
