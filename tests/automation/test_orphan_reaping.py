"""Orphans re-parented to the automation service are reaped, with real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from services.automation.proc_table import (
    browser_family,
    child_processes,
    list_processes,
    orphan_zombies,
    processes_of_browser,
    reap_orphan_zombies,
    running,
    set_subreaper,
)

# A process that leads a new session, starts a child in it and exits at once: the
# child is re-parented to us (the subreaper), in a group it does not lead, like
# Chromium's helpers. The child runs a program named `exe` (as a helper started
# through /proc/self/exe is called) that exits at once.
_ORPHAN_MAKER = """
import os, sys
os.setsid()
if os.fork() == 0:
    os.execv(sys.argv[1], [sys.argv[1]])
print(os.getpid(), flush=True)
"""


def zombie_children() -> list[int]:
    return [e.pid for e in list_processes() if e.ppid == os.getpid() and e.zombie]


def test_an_orphan_named_exe_is_reaped_and_our_own_children_are_left(tmp_path: Path) -> None:
    exe = tmp_path / "exe"
    exe.symlink_to("/bin/true")
    assert set_subreaper(True)
    try:
        # Ours, in our group: asyncio's (here: this test's) to reap, never the reaper's.
        own = subprocess.Popen(["/bin/true"])
        maker = subprocess.run(
            [sys.executable, "-c", _ORPHAN_MAKER, str(exe)],
            capture_output=True,
            text=True,
            check=True,
        )
        leader = int(maker.stdout)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            orphans = [e for e in list_processes() if e.ppid == os.getpid() and e.pgid == leader]
            if orphans and all(e.zombie for e in orphans) and own.pid in zombie_children():
                break
            time.sleep(0.02)
        [orphan] = orphans
        assert orphan.comm == "exe" and orphan.zombie  # the positive marker: it is there
        assert list(orphan_zombies(list_processes(), os.getpid(), os.getpgrp())) == [orphan.pid]
        assert reap_orphan_zombies() == 1
        assert zombie_children() == [own.pid]
        assert own.wait(5) == 0
    finally:
        set_subreaper(False)


def test_our_children_are_read_without_the_whole_process_table() -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        children = child_processes(os.getpid())
        assert sleeper.pid in [e.pid for e in children]  # the positive marker
        everyone = [e for e in list_processes() if e.ppid == os.getpid()]
        assert sorted(e.pid for e in children) == sorted(e.pid for e in everyone)
        assert all(e.ppid == os.getpid() for e in children)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert child_processes(2**22 + 1) == []  # no such process


def test_running_reads_one_process() -> None:
    assert running(os.getpid())
    child = subprocess.Popen(["/bin/true"])
    deadline = time.monotonic() + 5
    while child.pid not in zombie_children() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert child.pid in zombie_children()  # the positive marker: a zombie
    assert not running(child.pid)
    child.wait()
    assert not running(child.pid)


# A stand-in browser: it leads a group, starts a helper that starts another
# (grandchildren, as Chromium's zygotes start renderers), prints their pids, waits.
_FAMILY_MAKER = """
import os, subprocess, sys
os.setpgid(0, 0)
helper = subprocess.Popen([sys.executable, "-c",
    "import subprocess; c = subprocess.Popen(['sleep', '60']); print(c.pid, flush=True)"
    "; c.wait()"], stdout=subprocess.PIPE, text=True)
print(helper.pid, helper.stdout.readline().strip(), flush=True)
helper.wait()
"""


def test_a_browser_s_family_is_read_from_its_tree_and_our_orphans() -> None:
    profile = Path("/nonexistent/profile")
    assert set_subreaper(True)
    browser = subprocess.Popen(
        [sys.executable, "-c", _FAMILY_MAKER], stdout=subprocess.PIPE, text=True
    )
    helper = grandchild = 0
    try:
        assert browser.stdout is not None
        helper, grandchild = map(int, browser.stdout.readline().split())
        whole_table = processes_of_browser(list_processes(), browser.pid, profile)
        assert {e.pid for e in whole_table} == {browser.pid, helper, grandchild}
        assert {e.pid for e in browser_family(browser.pid, profile)} == {e.pid for e in whole_table}
        # The browser dies: its helper is re-parented to us, and still found.
        browser.kill()
        browser.wait()
        assert {e.pid for e in browser_family(browser.pid, profile)} == {helper, grandchild}
        assert {e.pid for e in processes_of_browser(list_processes(), browser.pid, profile)} == {
            helper,
            grandchild,
        }
    finally:
        browser.kill()
        browser.wait()
        browser.stdout.close()  # type: ignore[union-attr]
        started = [pid for pid in (helper, grandchild) if pid]
        for pid in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # Both are ours now (the subreaper's): waited for, no zombie left.
        for pid in started:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        set_subreaper(False)
