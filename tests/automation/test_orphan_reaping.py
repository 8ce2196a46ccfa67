"""Orphans re-parented to the automation service are reaped, with real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from services.automation.proc_table import (
    list_processes,
    orphan_zombies,
    reap_orphan_zombies,
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
