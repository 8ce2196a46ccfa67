"""The pure parts of choosing a browser's user (services/automation/browser_user.py);
the real uids, sandbox and refusals are in tests/edge/test_isolation.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.automation.browser_user import (
    EXECUTABLE_ENV,
    LAUNCHER,
    UID_ENV,
    BrowserUsers,
    check_reachable,
    hand_over,
    launch_target,
    subids_cover,
    user_namespace_argv,
)
from services.runtime.errors import InvalidArgument


def test_each_display_has_its_own_uid() -> None:
    users = BrowserUsers(300000)
    assert users.uid_for(":101") == 300101
    assert users.uid_for(":1900") == 301900
    assert BrowserUsers(None).uid_for(":101") is None


def test_the_launcher_runs_chromium_as_the_uid_or_chromium_runs_directly() -> None:
    executable, env = launch_target(300101, "/usr/bin/chromium", {"DISPLAY": ":101"})
    assert executable == str(LAUNCHER) and os.access(LAUNCHER, os.X_OK)
    assert env == {"DISPLAY": ":101", UID_ENV: "300101", EXECUTABLE_ENV: "/usr/bin/chromium"}
    assert launch_target(None, "/usr/bin/chromium", {"A": "1"}) == ("/usr/bin/chromium", {"A": "1"})


def test_subordinate_ids_must_cover_the_whole_range(tmp_path: Path) -> None:
    subuid = tmp_path / "subuid"
    subuid.write_text("alice:100000:65536\nbaton:300000:65536\n10001:400000:65536\n")
    assert subids_cover(subuid, {"baton"}, 300000)
    assert subids_cover(subuid, {"nobody", "10001"}, 400000)
    assert not subids_cover(subuid, {"baton"}, 300001)  # would run past the end
    assert not subids_cover(subuid, {"baton"}, 100000)  # alice's
    assert not subids_cover(tmp_path / "missing", {"baton"}, 300000)


def test_the_user_namespace_maps_us_to_root_and_the_browsers_to_themselves() -> None:
    assert user_namespace_argv(300000, ["python", "-m", "x"]) == [
        "unshare",
        "--map-root-user",
        "--map-users=300000,300000,65536",
        "--map-groups=300000,300000,65536",
        "--",
        "python",
        "-m",
        "x",
    ]


def test_a_profile_root_others_cannot_get_through_is_refused(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    (closed / "profiles").mkdir(parents=True)
    closed.chmod(0o700)
    with pytest.raises(InvalidArgument, match="closed is not searchable by others"):
        check_reachable(closed / "profiles")
    closed.chmod(0o711)
    check_reachable(closed / "profiles")


def test_the_browser_gets_its_directories_and_its_own_cookie_copy(tmp_path: Path) -> None:
    profile, temp = tmp_path / "profile", tmp_path / "temp"
    profile.mkdir()
    temp.mkdir()
    cookie = tmp_path / "display.xauth"
    cookie.write_bytes(b"cookie")
    cookie.chmod(0o600)
    copy = Path(hand_over(300101, profile, temp, str(cookie)))
    assert copy.parent == temp and copy.read_bytes() == b"cookie"
    for path, mode in ((profile, 0o700), (temp, 0o700), (copy, 0o600)):
        assert (path.stat().st_uid, path.stat().st_gid) == (300101, 300101)
        assert path.stat().st_mode & 0o777 == mode
    # The display's own file stays the service's.
    assert cookie.stat().st_uid == os.geteuid()
    assert hand_over(None, profile, temp, str(cookie)) == str(cookie)
