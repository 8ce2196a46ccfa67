"""PlaywrightDriver on its own: nothing outlives it, even a launch cut short."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from services.automation.chromium import (
    ChromiumBrowser,
    PlaywrightDriver,
    WindowSize,
    chromium_args,
)
from services.automation.proc_table import browser_main_pid, list_processes, processes_of_browser
from services.automation.steps import Goto
from tests.conftest import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

FEATURE_SWITCHES = ("--enable-features=", "--disable-features=")
WINDOW = WindowSize(800, 600)


def switch_features(argv: Sequence[str], prefix: str) -> list[str]:
    """The features the first `prefix` switch of `argv` names."""
    return next(arg for arg in argv if arg.startswith(prefix))[len(prefix) :].split(",")


def users_of(profile_root: Path) -> list[int]:
    marker = f"--user-data-dir={profile_root}"
    return [
        entry.pid
        for entry in list_processes()
        if any(arg.startswith(marker) for arg in entry.argv) and not entry.zombie
    ]


def profiles(root: Path, session_id: str) -> list[Path]:
    return list(root.glob(f"baton-profile-{session_id}-*"))


async def test_stopping_the_driver_closes_browsers_nobody_closed(
    driver: PlaywrightDriver, display: str, tmp_path: Path
) -> None:
    browser = await driver.launch("orphan", display, 800, 600)
    assert browser.pid is not None
    assert browser_main_pid(list_processes(), browser.profile_dir) == browser.pid

    await driver.stop()

    assert not browser.profile_dir.exists()
    assert users_of(tmp_path) == []


async def test_a_cancelled_launch_leaves_no_profile(
    driver: PlaywrightDriver, display: str, tmp_path: Path
) -> None:
    launch = asyncio.ensure_future(driver.launch("cut-short", display, 800, 600))
    await eventually(lambda: profiles(tmp_path, "cut-short") != [])
    launch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await launch
    # The launch goes on in the driver; what it started is closed once it ends.
    await eventually(lambda: profiles(tmp_path, "cut-short") == [])
    await eventually(lambda: users_of(tmp_path) == [])
    await driver.stop()
    assert profiles(tmp_path, "cut-short") == []


async def test_chromium_gets_playwrights_features_and_ours_in_one_switch_each(
    driver: PlaywrightDriver, display: str
) -> None:
    """Chromium keeps only the last of each feature switch: browser-pipe.py
    merges Playwright's and Baton's (chromium_args)."""
    browser = await driver.launch("features", display, 800, 600)
    try:
        argv = next(entry.argv for entry in list_processes() if entry.pid == browser.pid)
        ours = {
            prefix: set(switch_features(chromium_args(WINDOW), prefix))
            for prefix in FEATURE_SWITCHES
        }
        for prefix in FEATURE_SWITCHES:
            assert len([arg for arg in argv if arg.startswith(prefix)]) == 1, argv
            features = set(switch_features(argv, prefix))
            # Ours, and Playwright's beside them.
            assert ours[prefix] < features
    finally:
        await driver.stop()


def renderers(browser: ChromiumBrowser) -> list[str]:
    """The command lines of the browser's renderers (a zygote's children rewrite
    theirs as one string)."""
    assert browser.pid is not None
    return [
        line
        for entry in processes_of_browser(list_processes(), browser.pid, browser.profile_dir)
        if "--type=renderer" in (line := " ".join(entry.argv)) and not entry.zombie
    ]


async def test_a_session_s_chromium_runs_one_renderer_its_page_s(
    driver: PlaywrightDriver, display: str
) -> None:
    """No renderer is kept for Chromium's own WebUI (the address bar's popup)
    or for a next tab (chromium_args): a second one costs about 14 MiB."""
    browser = await driver.launch("renderers", display, 800, 600)
    try:
        await browser.perform(Goto("data:text/html,<title>one</title>"), 10_000)
        assert (await browser.observe(with_aria=False)).title == "one"
        # Chromium loads its WebUI pages in the first seconds after start.
        await asyncio.sleep(2)
        (page,) = renderers(browser)
        assert "--top-chrome-webui" not in page
    finally:
        await driver.stop()
