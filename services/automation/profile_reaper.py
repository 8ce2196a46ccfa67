"""Chromium profiles: marked with their owner, securely deleted, reaped after a crash.

Each profile directory holds an owner file naming the automation process that
made it (pid and start time, so a recycled pid does not count). At start, the
automation service kills the Chromium processes of every profile whose owner is
gone (a crashed predecessor) and securely deletes those profiles; profiles of
another live automation service sharing the root are left alone. Each browser
gets its own TMPDIR (its `org.chromium.Chromium.*` dirs land there), owned and
linked from its profile, so it is deleted with it; temp dirs left by older runs
are removed at start when their owner is gone or no process holds them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from services.automation.proc_table import list_processes

log = logging.getLogger(__name__)

PROFILE_GLOB = "baton-profile-*"
OWNER_FILE = "baton-owner"
# A browser's own TMPDIR: a short path in the system temp dir (a unix socket
# path is limited to 108 bytes, which a TMPDIR inside a deep profile root
# exceeds, and Chromium then fails to start), named in its profile.
TEMP_PREFIX = "baton-tmp-"
# The CDP hub's socket directory (cdp_hub.py), one per automation service.
HUB_PREFIX = "baton-cdp-"
TEMP_LINK = "baton-tmp"
# Chromium's temp dirs (its ProcessSingleton socket lives in one).
TEMP_GLOBS = ("org.chromium.Chromium.*",)
# Files holding what the person did or typed: overwritten before they are unlinked.
SENSITIVE_NAMES = ("Cookies", "History", "Login Data", "Web Data", "Visited Links")
# A profile without an owner file this young may be just being made.
UNOWNED_GRACE_S = 60.0


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def owner_stamp(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid} {_start_time(pid)}"


def mark_owned(profile_dir: Path) -> Path:
    """Stamp the profile as ours; the browser's own temp dir, linked from it."""
    (profile_dir / OWNER_FILE).write_text(owner_stamp())
    temp_dir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    (temp_dir / OWNER_FILE).write_text(owner_stamp())
    (profile_dir / TEMP_LINK).symlink_to(temp_dir)
    return temp_dir


def _owner_alive(profile_dir: Path) -> bool:
    try:
        stamp = (profile_dir / OWNER_FILE).read_text().split()
    except FileNotFoundError:
        age = time.time() - profile_dir.stat().st_mtime
        return age < UNOWNED_GRACE_S
    except PermissionError:
        # Another user's (a service run as another user on this machine): not
        # ours to judge, and not ours to remove either.
        return True
    if len(stamp) != 2 or not stamp[0].isdigit():
        return False
    return owner_stamp(int(stamp[0])).split() == stamp


def _overwrite(path: Path) -> None:
    with contextlib.suppress(OSError):
        size = path.stat().st_size
        with path.open("r+b") as handle:
            handle.write(b"\0" * size)
            handle.flush()
            os.fsync(handle.fileno())


def secure_delete(profile_dir: Path) -> None:
    """Overwrite the profile's cookie, history and login files, then remove it all."""
    if not profile_dir.is_dir():
        return
    with contextlib.suppress(OSError):
        temp_dir = Path(os.readlink(profile_dir / TEMP_LINK))
        if temp_dir.name.startswith(TEMP_PREFIX):
            shutil.rmtree(temp_dir, ignore_errors=True)
    for root, _dirs, files in os.walk(profile_dir):
        for name in files:
            if name.split("-journal")[0].split("-wal")[0] in SENSITIVE_NAMES:
                _overwrite(Path(root) / name)
    shutil.rmtree(profile_dir, ignore_errors=True)


def _real_uid(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    return None


def _kill(pid: int) -> bool:
    """SIGKILL `pid`; whether it was sent."""
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # A browser a crashed predecessor started in a user namespace of its own (an
    # unprivileged automation service, browser_user.py): root of ours has no right
    # over it, but its own uid, mapped in ours too, has.
    uid = _real_uid(pid)
    if uid is None:
        return False
    as_owner = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    command = [sys.executable, "-c", f"import os; os.kill({pid}, {int(signal.SIGKILL)})"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return (
            subprocess.run([*as_owner, *command], capture_output=True, timeout=10).returncode == 0
        )
    return False


def kill_users(profile_dir: Path) -> list[int]:
    """SIGKILL every process running with this profile; their pids."""
    flag = f"--user-data-dir={profile_dir}"
    killed = []
    for entry in list_processes():
        if flag in entry.argv and not entry.zombie and _kill(entry.pid):
            killed.append(entry.pid)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
        flag in e.argv and not e.zombie for e in list_processes()
    ):
        time.sleep(0.05)
    return killed


def _held_paths() -> set[str]:
    """Paths some process has open, listens on (unix sockets) or works in."""
    held = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 8:
                held.add(fields[7])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            held.add(os.readlink(proc / "cwd"))
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    held.add(os.readlink(fd))
    return held


def reap_orphans(profile_root: Path | None) -> list[Path]:
    """Kill and securely delete what crashed automation services left; what was removed."""
    root = profile_root or Path(tempfile.gettempdir())
    removed = []
    for profile in sorted(root.glob(PROFILE_GLOB)):
        if not profile.is_dir() or _owner_alive(profile):
            continue
        killed = kill_users(profile)
        secure_delete(profile)
        log.warning("removed the profile %s left by a crash (killed %s)", profile, killed)
        removed.append(profile)
    temp = Path(tempfile.gettempdir())
    owned = [*temp.glob(f"{TEMP_PREFIX}*"), *temp.glob(f"{HUB_PREFIX}*")]
    for temp_dir in sorted(owned):
        if temp_dir.is_dir() and not _owner_alive(temp_dir):
            shutil.rmtree(temp_dir, ignore_errors=True)
            removed.append(temp_dir)
    leftovers = [p for pattern in TEMP_GLOBS for p in temp.glob(pattern) if p.is_dir()]
    if leftovers:
        held = _held_paths()
        for left in leftovers:
            # Old and held by no process: another live Chromium's are neither.
            try:
                old = time.time() - left.stat().st_mtime > UNOWNED_GRACE_S
            except OSError:
                continue
            if old and not any(path == str(left) or path.startswith(f"{left}/") for path in held):
                shutil.rmtree(left, ignore_errors=True)
                removed.append(left)
    return removed
