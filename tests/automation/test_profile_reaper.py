"""Profiles left by a crashed automation service are securely deleted; others stay."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from deploy.service_user import DEFAULT_USER
from services.automation.browser_user import user_namespace_argv
from services.automation.proc_table import list_processes
from services.automation.profile_reaper import OWNER_FILE, owner_stamp, reap_orphans

# The browsers' uids (services/automation/settings.py, BATON_BROWSER_UID_BASE).
BASE = 300000


def test_orphan_profiles_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    orphan = tmp_path / "baton-profile-a-1"
    (orphan / "Default").mkdir(parents=True)
    (orphan / OWNER_FILE).write_text(f"{dead.stdout.strip()} 1")
    cookies = orphan / "Default" / "Cookies"
    cookies.write_bytes(b"session=secret")
    # Held open, to see what is on disk after the overwrite.
    handle = os.open(cookies, os.O_RDONLY)
    live = tmp_path / "baton-profile-b-1"
    live.mkdir()
    (live / OWNER_FILE).write_text(owner_stamp())
    try:
        removed = reap_orphans(tmp_path)
        assert orphan in removed and not orphan.exists()
        assert live.exists()
        assert os.pread(handle, 14, 0) == b"\0" * 14
    finally:
        os.close(handle)


def test_a_browser_in_a_predecessors_user_namespace_is_killed(tmp_path: Path) -> None:
    """An unprivileged automation service restarted after a crash is root of a new
    user namespace, a sibling of the one its predecessor's browsers run in: it
    kills them as their own uid (browser_user.py)."""
    user = pwd.getpwnam(DEFAULT_USER)
    as_service = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    uid = BASE + 251
    as_browser = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    profile = tmp_path / "baton-profile-left"
    sleeper = "import time; print('up', flush=True); time.sleep(60)"
    browser = subprocess.Popen(
        [
            *as_service,
            *user_namespace_argv(
                BASE,
                [*as_browser, sys.executable, "-c", sleeper, f"--user-data-dir={profile}"],
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert browser.stdout is not None and browser.stdout.readline() == "up\n"
        pid = next(e.pid for e in list_processes() if f"--user-data-dir={profile}" in e.argv)
        # Positive marker: root of a sibling namespace may not signal it directly.
        direct = f"import os; os.kill({pid}, 0)"
        refused = subprocess.run(
            [*as_service, *user_namespace_argv(BASE, [sys.executable, "-c", direct])],
            capture_output=True,
            text=True,
        )
        assert "PermissionError" in refused.stderr
        reaper = (
            "from pathlib import Path; from services.automation.profile_reaper import "
            f"kill_users; print(kill_users(Path({str(profile)!r})))"
        )
        killed = subprocess.run(
            [*as_service, *user_namespace_argv(BASE, [sys.executable, "-c", reaper])],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parents[2],
            timeout=30,
        )
        assert killed.stdout.strip() == f"[{pid}]", killed.stderr
        assert browser.wait(timeout=10) == -9
    finally:
        browser.kill()
        browser.wait()
        assert browser.stdout is not None
        browser.stdout.close()


def test_another_users_directories_are_left_alone_not_a_crash() -> None:
    """The service run as baton meets a root service's 0700 hub directory in the
    shared temp dir: it cannot read its owner file, and must start anyway."""
    user = pwd.getpwnam(DEFAULT_USER)
    as_service = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    temp = Path(tempfile.mkdtemp(dir="/var/tmp"))
    try:
        temp.chmod(0o1777)
        foreign = temp / "baton-cdp-root"
        foreign.mkdir(mode=0o700)
        (foreign / OWNER_FILE).write_text(f"{dead} 1")
        # Positive marker: one of its own, left by a dead owner, is removed.
        own = temp / "baton-cdp-mine"
        own.mkdir()
        (own / OWNER_FILE).write_text(f"{dead} 1")
        os.chown(own, user.pw_uid, user.pw_gid)
        os.chown(own / OWNER_FILE, user.pw_uid, user.pw_gid)
        reaper = (
            "from services.automation.profile_reaper import reap_orphans; "
            "print([p.name for p in reap_orphans(None)])"
        )
        run = subprocess.run(
            [*as_service, sys.executable, "-c", reaper],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parents[2],
            env={**os.environ, "TMPDIR": str(temp)},
            timeout=30,
        )
        assert run.stdout.strip() == "['baton-cdp-mine']", run.stderr
        assert foreign.exists() and not own.exists()
    finally:
        shutil.rmtree(temp)
