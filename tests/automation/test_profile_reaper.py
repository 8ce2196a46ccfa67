"""Profiles left by a crashed automation service are securely deleted; others stay."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.automation.profile_reaper import OWNER_FILE, owner_stamp, reap_orphans


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
