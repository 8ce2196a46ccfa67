"""A launch cut short (a warm slot released while its Chromium starts) leaves
nothing, even when Playwright never finishes it: real profile, real processes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import cast

from playwright.async_api import BrowserContext

from services.automation.chromium import abandon_launch
from services.automation.profile_reaper import TEMP_LINK, mark_owned


class FakeContext:
    closed = False

    async def close(self) -> None:
        self.closed = True


async def test_a_launch_that_never_finishes_loses_its_processes_and_profile(
    tmp_path: Path,
) -> None:
    profile = tmp_path / "baton-profile-warm7-abc"
    profile.mkdir()
    temp_dir = mark_owned(profile)
    (profile / "Cookies").write_bytes(b"secret")
    # A process on the profile, as Chromium's (the flag is how they are found).
    chromium = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(60)", f"--user-data-dir={profile}"
    )
    launch: asyncio.Future[BrowserContext] = asyncio.get_running_loop().create_future()
    late: list[BrowserContext] = []
    try:
        # Playwright's launch stays pending (it did for minutes in the churn test).
        await asyncio.wait_for(abandon_launch(launch, profile, late.append, wait_s=0.2), 10)
        assert not profile.exists() and not temp_dir.exists()
        assert await asyncio.wait_for(chromium.wait(), 5) == -9
        # The launch finishes after all: what it started is handed over to be closed.
        context = cast(BrowserContext, FakeContext())
        launch.set_result(context)
        await asyncio.sleep(0)
        assert late == [context]
    finally:
        if chromium.returncode is None:
            chromium.kill()
            await chromium.wait()


async def test_a_launch_that_finishes_in_time_is_closed_and_deleted(tmp_path: Path) -> None:
    profile = tmp_path / "baton-profile-warm8-abc"
    profile.mkdir()
    temp_dir = mark_owned(profile)
    assert (profile / TEMP_LINK).is_symlink()
    launch: asyncio.Future[BrowserContext] = asyncio.get_running_loop().create_future()
    context = FakeContext()
    asyncio.get_running_loop().call_later(0.05, launch.set_result, cast(BrowserContext, context))
    late: list[BrowserContext] = []
    await asyncio.wait_for(abandon_launch(launch, profile, late.append, wait_s=5), 10)
    assert context.closed and late == []
    assert not profile.exists() and not temp_dir.exists()
