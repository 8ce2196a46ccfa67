"""Reading /proc: find a Chromium's processes, and reap the orphans it leaves.

Chromium's zygotes and crash handlers outlive their parent when it exits or is
killed; they are re-parented to the nearest subreaper. Containers often run a
PID 1 that never reaps, so this process makes itself a subreaper and reaps the
orphaned zombies that land on it (only those: its own children belong to asyncio).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
# comm names (truncated to 15 characters by the kernel) of Chromium's processes.
CHROMIUM_COMMS = frozenset({"chromium", "chrome", "chrome_crashpad", "chrome_crashpad_handler"})


@dataclass(frozen=True)
class ProcessEntry:
    pid: int
    ppid: int
    pgid: int
    state: str
    comm: str
    argv: tuple[str, ...]

    @property
    def zombie(self) -> bool:
        return self.state == "Z"


def parse_stat(pid: int, stat: str, cmdline: bytes) -> ProcessEntry:
    """A ProcessEntry from /proc/<pid>/stat and /proc/<pid>/cmdline contents."""
    # comm is in parentheses and may itself contain spaces or parentheses.
    open_paren = stat.index("(")
    close_paren = stat.rindex(")")
    comm = stat[open_paren + 1 : close_paren]
    fields = stat[close_paren + 2 :].split()
    argv = tuple(part.decode(errors="replace") for part in cmdline.split(b"\0") if part)
    return ProcessEntry(
        pid=pid,
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        state=fields[0],
        comm=comm,
        argv=argv,
    )


def read_process(pid: int, proc: Path = Path("/proc")) -> ProcessEntry | None:
    """`pid`'s entry, or None when it is gone (or exits while we look)."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        cmdline = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return parse_stat(pid, stat, cmdline)


def list_processes(proc: Path = Path("/proc")) -> list[ProcessEntry]:
    """Every process on the host: two files each (use `child_processes` where you can)."""
    found = (
        read_process(int(child.name), proc) for child in proc.iterdir() if child.name.isdigit()
    )
    return [entry for entry in found if entry is not None]


def running(pid: int, proc: Path = Path("/proc")) -> bool:
    """Whether `pid` exists and is not a zombie: one file, not the whole table."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return False
    return parse_stat(pid, stat, b"").state != "Z"


def child_pids(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """The children of `pid`, from each of its threads' `children` list."""
    children: set[int] = set()
    try:
        tasks = list((proc / str(pid) / "task").iterdir())
    except OSError:
        return []
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            children.update(int(child) for child in (task / "children").read_text().split())
    return sorted(children)


def child_processes(pid: int, proc: Path = Path("/proc")) -> list[ProcessEntry]:
    """The children of `pid`: a few files, where `list_processes` reads two for every
    process on the host (a quarter of a core with 36 sessions, bench figure 4)."""
    found = (read_process(child, proc) for child in child_pids(pid, proc))
    return [entry for entry in found if entry is not None]


def grandchild_processes(pid: int, proc: Path = Path("/proc")) -> list[ProcessEntry]:
    """The children of `pid`'s children: where our Chromium browsers are (each a
    child of Playwright's driver, which is ours)."""
    return [entry for child in child_pids(pid, proc) for entry in child_processes(child, proc)]


def browser_main_pid(entries: Iterable[ProcessEntry], profile_dir: Path) -> int | None:
    """The browser process of the Chromium using `profile_dir` (not its helpers)."""
    flag = f"--user-data-dir={profile_dir}"
    for entry in entries:
        if flag in entry.argv and not any(arg.startswith("--type=") for arg in entry.argv):
            return entry.pid
    return None


def processes_of_browser(
    entries: Iterable[ProcessEntry], browser_pid: int, profile_dir: Path
) -> list[ProcessEntry]:
    """Every process, zombie or not, in the browser's group or using its profile."""
    flag = f"--user-data-dir={profile_dir}"
    return [entry for entry in entries if entry.pgid == browser_pid or flag in entry.argv]


def browser_family(
    browser_pid: int, profile_dir: Path, proc: Path = Path("/proc")
) -> list[ProcessEntry]:
    """What `processes_of_browser` finds in the whole table, read from where it can
    be: the browser and its descendants, and this process's children in the
    browser's group or using its profile (its helpers orphaned to us, the
    subreaper) with theirs. The files of a few dozen processes, where the whole
    table is two for every process on the host (about 800 at 96 sessions), read
    every 50 ms while a browser closes, in the event loop (bench/README.md, 2.5)."""
    browser = read_process(browser_pid, proc)
    todo = [browser] if browser is not None else []
    todo += processes_of_browser(child_processes(os.getpid(), proc), browser_pid, profile_dir)
    found: dict[int, ProcessEntry] = {}
    while todo:
        entry = todo.pop()
        if entry.pid not in found:
            found[entry.pid] = entry
            todo += child_processes(entry.pid, proc)
    return processes_of_browser(found.values(), browser_pid, profile_dir)


def chromium_children(entries: Iterable[ProcessEntry], parent_pid: int) -> Iterator[ProcessEntry]:
    for entry in entries:
        if entry.ppid == parent_pid and entry.comm in CHROMIUM_COMMS:
            yield entry


def orphan_zombies(
    entries: Iterable[ProcessEntry], parent_pid: int, parent_pgid: int
) -> Iterator[int]:
    """Zombie children of `parent_pid` that it did not start itself.

    Those are Chromium's by name, and those in a process group led by another
    process than ours: what a process starts with asyncio either stays in its
    group or leads a new one (start_new_session), and asyncio reaps it. Chromium's
    orphans do not all have its name: a helper that exits before it names itself
    is called `exe` (started as /proc/self/exe); reaped by name only, one such
    zombie was left per few dozen browsers (README "Crashes and processes").
    """
    for entry in entries:
        if entry.ppid != parent_pid or not entry.zombie:
            continue
        foreign_group = entry.pgid not in (parent_pgid, entry.pid)
        if entry.comm in CHROMIUM_COMMS or foreign_group:
            yield entry.pid


def set_subreaper(enabled: bool) -> bool:
    """Make orphaned descendants (Chromium helpers) our children, so we can reap them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok: bool = libc.prctl(_PR_SET_CHILD_SUBREAPER, int(enabled), 0, 0, 0) == 0
    except (OSError, AttributeError):
        ok = False
    if not ok:
        log.warning("cannot set the child subreaper flag; Chromium helpers may linger as zombies")
    return ok


def reap_orphan_zombies() -> int:
    """Reap the orphaned Chromium zombies that are our children; return how many."""
    reaped = 0
    for pid in orphan_zombies(child_processes(os.getpid()), os.getpid(), os.getpgrp()):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
            reaped += 1
    return reaped
