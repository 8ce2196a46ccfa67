"""Create/delete cycles against `make run`'s launcher, and what the stack holds after.

What a quiet stack holds: the services, the warm slots' X servers, and one Chromium
per warm slot running on its own profile. Everything is read from /proc and the
file system.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.stack_process import LauncherStack, listening_inodes, process_tree, rss_kib

SERVICES = ("display", "automation", "session", "edge")
CHROMIUM = "chromium"
CRASH_HANDLER = "chrome_crashpad_handler"
# Each browser starts two crash handlers (the handler and its monitor).
CRASH_HANDLERS_PER_BROWSER = 2


@dataclass(frozen=True)
class Footprint:
    # Processes by executable, Chromium's excluded.
    programs: Counter[str]
    # Profile directory name -> how many Chromium processes run on it.
    browsers: Counter[str]
    crash_handlers: int
    # Zombies and processes exiting (no executable to read).
    exiting: int
    listening: int
    x_locks: tuple[str, ...]
    profiles: tuple[str, ...]
    # Kinds of entries in the stack's TMPDIR ("baton-tmp", "playwright-artifacts", ...).
    temp_dirs: Counter[str]

    def settled(self, warm_slots: int) -> bool:
        """Only the warm slots remain, each with its browser, and nothing is exiting."""
        return (
            self.exiting == 0
            and len(self.x_locks) == len(self.profiles) == warm_slots
            and set(self.browsers) == set(self.profiles)
        )

    def summary(self) -> str:
        return (
            f"programs {dict(self.programs)}, browsers {dict(self.browsers)}, "
            f"crash handlers {self.crash_handlers}, exiting {self.exiting}, "
            f"listening {self.listening}, x locks {list(self.x_locks)}, "
            f"profiles {list(self.profiles)}, temp dirs {dict(self.temp_dirs)}"
        )


def _process(pid: int) -> tuple[str, int, list[str]]:
    """Executable name ("?" for a zombie or a process exiting), group and argv."""
    try:
        exe = Path(os.readlink(f"/proc/{pid}/exe")).name
        stat = Path(f"/proc/{pid}/stat").read_text()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?", 0, []
    return exe, int(stat.rsplit(")", 1)[1].split()[2]), argv


def _profile(argv: list[str]) -> str | None:
    for arg in argv:
        if arg.startswith("--user-data-dir="):
            return Path(arg.partition("=")[2]).name
    return None


def _kind(name: str) -> str:
    """A temp dir's kind: its name without the random suffix."""
    return name.rsplit("-", 1)[0] if "-" in name else name


def footprint(stack: LauncherStack, displays: range) -> Footprint:
    tree = process_tree(stack.process.pid)
    processes = {pid: _process(pid) for pid in tree}
    programs: Counter[str] = Counter()
    browsers: Counter[str] = Counter()
    crash_handlers = exiting = 0
    for exe, group, argv in processes.values():
        if exe == "?":
            exiting += 1
        elif exe == CHROMIUM:
            # A browser's helpers are in its process group; not all name the profile.
            leader = processes.get(group, ("?", 0, []))[2]
            browsers[_profile(argv) or _profile(leader) or "?"] += 1
        elif exe == CRASH_HANDLER:
            crash_handlers += 1
        else:
            programs[exe] += 1
    x_locks = tuple(
        sorted(
            p.name
            for p in Path("/tmp").glob(".X*-lock")
            if p.name[2:-5].isdigit() and int(p.name[2:-5]) in displays
        )
    )
    return Footprint(
        programs=programs,
        browsers=browsers,
        crash_handlers=crash_handlers,
        exiting=exiting,
        listening=len(listening_inodes(tree)),
        x_locks=x_locks,
        profiles=tuple(sorted(p.name for p in stack.profiles.glob("*"))),
        temp_dirs=Counter(_kind(p.name) for p in stack.tmp.iterdir()),
    )


def quiet(stack: LauncherStack, displays: range, warm_slots: int, timeout: float) -> Footprint:
    """The footprint once ended sessions are gone and the warm pool is full again,
    unchanged for a second (or whatever it is at the deadline)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        now = footprint(stack, displays)
        if (now.settled(warm_slots) and now == last) or time.monotonic() > deadline:
            return now
        last = now
        time.sleep(1)


def cycle(stack: LauncherStack, index: int) -> None:
    session = stack.create_session()
    if index % 2:
        # Half wait for the browser to be up; half are deleted right after create.
        deadline = time.monotonic() + 30
        while True:
            got = stack.request("GET", f"/api/browser-session/{session['id']}")
            if got["task"]["status"] != "PENDING":
                break
            if got["state"] == "FAILED" or time.monotonic() > deadline:
                tail = "".join(stack.lines[-30:])
                raise AssertionError(f"no browser: {got}\n{tail}")
            time.sleep(0.1)
    stack.request("DELETE", f"/api/browser-session/{session['id']}")


def run_cycles(stack: LauncherStack, count: int, parallel: int) -> float:
    """`count` create/delete cycles, `parallel` at a time; the seconds they took."""
    started = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda i: cycle(stack, i), range(count)))
    return time.monotonic() - started


def rss(stack: LauncherStack) -> dict[str, int]:
    return {name: rss_kib(stack.service_pid(name)) for name in SERVICES}
