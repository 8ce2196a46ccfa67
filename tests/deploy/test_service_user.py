"""Who `make run`'s services run as when it is root (deploy/service_user.py)."""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest

from deploy.service_user import DEFAULT_USER, ServiceUser, service_user, state_dirs
from services.runtime.settings import ConfigError


def test_not_root_runs_the_services_as_itself() -> None:
    assert service_user({}, euid=1000) is None


def test_root_runs_them_as_baton_unless_asked_to_stay_root(
    capsys: pytest.CaptureFixture[str],
) -> None:
    entry = pwd.getpwnam(DEFAULT_USER)
    assert service_user({}, euid=0) == ServiceUser(
        DEFAULT_USER, entry.pw_uid, entry.pw_gid, entry.pw_dir
    )
    assert service_user({"BATON_RUN_AS": "root"}, euid=0) is None
    assert "BATON_RUN_AS=root: every service runs as root" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="BATON_RUN_AS=nobody-here: no such user"):
        service_user({"BATON_RUN_AS": "nobody-here"}, euid=0)


def test_the_wrapper_and_environment_are_the_users_own() -> None:
    user = ServiceUser("baton", 999, 995, "/var/lib/baton")
    assert user.wrapper() == ("setpriv", "--reuid=999", "--regid=995", "--clear-groups")
    env = user.environment(
        {"HOME": "/root", "XDG_RUNTIME_DIR": "/run/user/0", "BATON_X": "1", "USER": "root"}
    )
    assert env == {"HOME": "/var/lib/baton", "USER": "baton", "LOGNAME": "baton", "BATON_X": "1"}


def test_state_dirs_are_the_named_ones_or_the_services_defaults() -> None:
    home = {"HOME": "/var/lib/baton", "TMPDIR": "/tmp/x"}
    assert state_dirs({**home, "BATON_DISPLAY_PORT": "7", "BATON_SESSION_PORT": "8"}) == {
        "BATON_DISPLAY_STATE_DIR": Path("/tmp/baton-display-7"),
        "BATON_SESSION_STATE_DIR": Path("/var/lib/baton/.local/state/baton-session-8"),
        "TMPDIR": Path("/tmp/x"),
    }
    named = {**home, "BATON_PROFILE_ROOT": "/p", "BATON_ETCD_ENDPOINTS": "127.0.0.1:2379"}
    # With etcd the session service keeps no state dir.
    assert state_dirs(named) == {
        "BATON_PROFILE_ROOT": Path("/p"),
        "BATON_DISPLAY_STATE_DIR": Path("/tmp/baton-display-50052"),
        "TMPDIR": Path("/tmp/x"),
    }
