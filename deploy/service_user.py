"""Who the services run as when their launcher is root (README.md, "Isolation").

`make run` started as root (CI, a container, a worker host of `make cluster`)
starts every service as user `baton` (`BATON_RUN_AS`; `root` keeps them root, with
a warning): setpriv with that user's uid and gid and no supplementary groups, so no
service keeps a capability. The automation service, unprivileged, then makes a user
namespace of its own to give each browser its uid (services/automation/browser_user.py).

Before the first start the launcher makes sure that user can work, and says in one
line per problem what is wrong: the state directories the settings name are made if
missing (owned by that user); as that user, a check run of the venv's Python reads
the files the settings name (TLS) and writes the directories.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.display.settings import default_state_dir as display_state_dir
from services.runtime.settings import ConfigError, Env
from services.session.settings import default_state_dir as session_state_dir

ENV_NAME = "BATON_RUN_AS"
DEFAULT_USER = "baton"
# Directories the services write, named by these settings: made if missing.
DIR_SETTINGS = (
    "BATON_DISPLAY_STATE_DIR",
    "BATON_RECORDING_DIR",
    "BATON_SESSION_STATE_DIR",
    "BATON_PROFILE_ROOT",
    "TMPDIR",
)
# Files the services read, named by these settings.
FILE_SETTINGS = tuple(
    f"BATON_{kind}_{part}"
    for kind in ("TLS", "GRPC_TLS", "STREAM_TLS")
    for part in ("CERT", "KEY", "CA", "CLIENT_CERT", "CLIENT_KEY")
)
# The caller's own per-user places (root's): the service user has its own.
USER_DIR_VARIABLES = (
    "XDG_RUNTIME_DIR",
    "XDG_STATE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
)
CHECK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ServiceUser:
    name: str
    uid: int
    gid: int
    home: str

    def setpriv_options(self) -> tuple[str, ...]:
        return (f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups")

    def wrapper(self) -> tuple[str, ...]:
        """The command that runs its arguments as this user (setpriv execs them)."""
        return ("setpriv", *self.setpriv_options())

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        """`env` for this user: its HOME and name, none of the caller's XDG places."""
        kept = {k: v for k, v in env.items() if k not in USER_DIR_VARIABLES}
        return {**kept, "HOME": self.home, "USER": self.name, "LOGNAME": self.name}


def service_user(env: Mapping[str, str], euid: int | None = None) -> ServiceUser | None:
    """The user to run the services as, or None: as we are (not root, or asked)."""
    if (os.geteuid() if euid is None else euid) != 0:
        return None
    name = env.get(ENV_NAME) or DEFAULT_USER
    if name == "root":
        print(
            f"baton: warning: {ENV_NAME}=root: every service runs as root "
            "(the browsers still run as their own users)",
            file=sys.stderr,
            flush=True,
        )
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(
            f"{ENV_NAME}={name}: no such user (`make system-packages` makes user "
            f"{DEFAULT_USER}; {ENV_NAME}=root keeps the services root)"
        ) from None
    if entry.pw_uid == 0:
        return None
    return ServiceUser(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def state_dirs(env: Mapping[str, str]) -> dict[str, Path]:
    """Each directory the services write, by the setting that names it (or the
    default's, as the service computes it from `env`)."""
    named = {name: Path(env[name]) for name in DIR_SETTINGS if env.get(name)}
    settings = Env(env)
    named.setdefault(
        "BATON_DISPLAY_STATE_DIR",
        display_state_dir(settings.integer("BATON_DISPLAY_PORT", 50052), settings),
    )
    if not env.get("BATON_ETCD_ENDPOINTS"):
        named.setdefault(
            "BATON_SESSION_STATE_DIR",
            session_state_dir(settings.integer("BATON_SESSION_PORT", 50051), settings),
        )
    named.setdefault("TMPDIR", Path(tempfile.gettempdir()))
    return named


def prepare(
    user: ServiceUser, env: Mapping[str, str], also_writes: Mapping[str, Path] | None = None
) -> None:
    """Make the directories `env` names that are missing, owned by `user`; check as
    `user` that it can run our Python, read the named files and write the
    directories (and `also_writes`, by name). ConfigError with one line per problem."""
    for name in DIR_SETTINGS:
        if env.get(name) and not Path(env[name]).exists():
            path = Path(env[name])
            path.mkdir(parents=True)
            os.chown(path, user.uid, user.gid)
    files = {name: env[name] for name in FILE_SETTINGS if env.get(name)}
    written = {**state_dirs(env), **(also_writes or {})}
    dirs = {name: str(path) for name, path in written.items() if path.exists()}
    argv = [*user.wrapper(), sys.executable, "-m", "deploy.service_user"]
    try:
        result = subprocess.run(
            argv,
            input=json.dumps({"read": files, "write": dirs}),
            env=user.environment(env),
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"checking what user {user.name} can reach took over {CHECK_TIMEOUT_S:g} s"
        ) from None
    if result.returncode == 0:
        return
    problems = result.stdout.strip()
    if not problems:
        # Not even our Python started: a venv of a Python under /root, a checkout
        # out of the user's reach.
        reason = result.stderr.strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        problems = (
            f"user {user.name} cannot run {sys.executable} -m deploy.service_user "
            f"({reason[0]}): make the venv from /usr/bin/python3 (`rm -rf .venv && make "
            f"setup`) in a checkout {user.name} can read, or set {ENV_NAME}=root"
        )
    raise ConfigError(f"the services run as user {user.name}, but:\n" + problems)


def problems(read: Mapping[str, str], write: Mapping[str, str]) -> list[str]:
    """What this process cannot do of what the settings ask."""
    found = []
    for names, mode, verb in ((read, os.R_OK, "readable"), (write, os.W_OK | os.X_OK, "writable")):
        for name, path in names.items():
            if not os.path.exists(path):
                found.append(
                    f"{name}={path} is out of its reach (missing, or a directory above "
                    "it does not let it through: chmod o+x that one)"
                )
            elif not os.access(path, mode):
                found.append(f"{name}={path} is not {verb} by it (chown it, or pick another)")
    return found


if __name__ == "__main__":
    # The check `prepare` runs as the service user: names and paths on stdin.
    asked = json.load(sys.stdin)
    found = problems(asked["read"], asked["write"])
    print("\n".join(found))
    raise SystemExit(1 if found else 0)
