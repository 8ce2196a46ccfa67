"""Memory (PSS) and CPU time of process trees, read from /proc."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from services.automation.proc_table import child_pids
from services.runtime.healthcheck import service_from_command

CATEGORIES = ("chromium", "x_vnc", "websockify", "baton")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants (those alive now)."""
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        queue += child_pids(current)
    return pids


def category(comm: str, cmdline: list[str]) -> str:
    """Which part of a session a process is (pure: unit-tested)."""
    program = os.path.basename(cmdline[0]) if cmdline else ""
    if comm in ("Xvnc", "Xvfb", "x11vnc") or program in ("Xvnc", "Xvfb", "x11vnc"):
        return "x_vnc"
    if "websockify" in cmdline or any(arg.endswith("/websockify") for arg in cmdline[:2]):
        return "websockify"
    if "chrom" in comm or "chromium" in program or program.startswith("chrome"):
        return "chromium"
    return "baton"


def describe(pid: int) -> tuple[str, list[str]] | None:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return comm, [arg.decode(errors="replace") for arg in cmdline if arg]


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_by_category(roots: Iterable[int]) -> dict[str, float]:
    """PSS in MiB of every process under `roots`, summed by category."""
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for root in roots:
        for pid in tree(root):
            described = describe(pid)
            if described is None:
                continue
            totals[category(*described)] += pss_kib(pid) / 1024
    return {name: round(value, 1) for name, value in totals.items()}


def cpu_seconds(roots: Iterable[int]) -> dict[int, float]:
    """User + system CPU seconds of every process under `roots`, by pid."""
    seconds = {}
    for root in roots:
        for pid in tree(root):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            # utime and stime are fields 14 and 15; after the ")" they are 12th and 13th.
            seconds[pid] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return seconds


def cpu_percent(before: Mapping[int, float], after: Mapping[int, float], wall_s: float) -> float:
    """CPU used between two `cpu_seconds` readings, in % of one core."""
    used = sum(after[pid] - before[pid] for pid in after if pid in before)
    return round(100 * used / wall_s, 2)


def cpu_percent_by_category(
    before: Mapping[int, float], after: Mapping[int, float], wall_s: float
) -> dict[str, float]:
    """`cpu_percent`, split like `pss_by_category`, and Baton's own by service."""
    used = dict.fromkeys(CATEGORIES, 0.0)
    for pid in after.keys() & before.keys():
        described = describe(pid)
        if described is None:
            continue
        part = category(*described)
        if part == "baton":
            part = baton_part(described[1])
        used[part] = used.get(part, 0.0) + after[pid] - before[pid]
    return {name: round(100 * value / wall_s, 2) for name, value in used.items()}


def baton_part(cmdline: list[str]) -> str:
    """Which of Baton's own processes this is: `baton:<service>` or `baton:other`."""
    service = service_from_command(cmdline)
    if service is not None:
        return "baton:" + service
    if any("playwright" in arg for arg in cmdline[:3]):
        return "baton:playwright-driver"
    return "baton:other"


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0
