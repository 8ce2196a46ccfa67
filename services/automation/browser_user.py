"""Who runs a session's Chromium: a uid of its own, with Chromium's sandbox on.

README.md "Isolation". Chromium's sandbox (a user, PID and network namespace and a
seccomp-bpf filter per renderer) does not start as root, and one uid for every
browser would let one session's browser read another's profile. So when the
automation service is root in its user namespace (real root, or the namespace it
makes for itself as an unprivileged user: `user_namespace_argv`), each display's
browser runs as uid `base + display number` through `browser-launcher.sh`, owning
its profile, TMPDIR, HOME and a copy of the display's X cookie, mode 0700/0600. When
it is not root it has no other uid to give: the browser runs as the service's own
user, still sandboxed, and the service says so at start.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.runtime.errors import InvalidArgument

log = logging.getLogger(__name__)

LAUNCHER = Path(__file__).with_name("browser-launcher.sh")
# X display numbers are below this, so `base + display` stays in the range.
UID_RANGE = 65536
XAUTHORITY_NAME = "Xauthority"
UID_ENV = "BATON_BROWSER_UID"
EXECUTABLE_ENV = "BATON_BROWSER_EXECUTABLE"


@dataclass(frozen=True)
class BrowserUsers:
    """Browser uids `base + display`, or None: the browsers run as we do."""

    base: int | None

    @classmethod
    def for_this_process(cls, base: int) -> BrowserUsers:
        if os.geteuid() == 0:
            return cls(base)
        log.warning(
            "not root in a user namespace of our own: every Chromium runs as uid %d, "
            "sandboxed but not separated from the others (README.md, 'Isolation')",
            os.geteuid(),
        )
        return cls(None)

    def uid_for(self, display: str) -> int | None:
        if self.base is None:
            return None
        return self.base + int(display.lstrip(":"))


def check_reachable(path: Path) -> None:
    """`path` and every directory above it must let other users through (x for others)."""
    path = path.resolve()
    for parent in (path, *path.parents):
        if not parent.stat().st_mode & 0o001:
            raise InvalidArgument(
                f"{path} is not reachable by the browsers' users: {parent} is not "
                "searchable by others (chmod o+x it, or set BATON_PROFILE_ROOT elsewhere)"
            )


def hand_over(uid: int | None, profile_dir: Path, temp_dir: Path, xauthority: str) -> str:
    """Give the browser's directories to `uid` with a copy of the display's X cookie;
    the XAUTHORITY the browser uses."""
    if uid is None:
        return xauthority
    for directory in (profile_dir, temp_dir):
        os.chown(directory, uid, uid)
        directory.chmod(0o700)
    if not xauthority:
        return ""
    copy = temp_dir / XAUTHORITY_NAME
    shutil.copyfile(xauthority, copy)
    copy.chmod(0o600)
    os.chown(copy, uid, uid)
    return str(copy)


def launch_target(
    uid: int | None, chromium_path: str, env: Mapping[str, str | float | bool]
) -> tuple[str, dict[str, str | float | bool]]:
    """The executable Playwright starts, and its environment."""
    if uid is None:
        return chromium_path, dict(env)
    return str(LAUNCHER), {**env, UID_ENV: str(uid), EXECUTABLE_ENV: chromium_path}


def _subid_ranges(path: Path, names: set[str]) -> list[tuple[int, int]]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in names and fields[1].isdigit() and fields[2].isdigit():
            ranges.append((int(fields[1]), int(fields[2])))
    return ranges


def subids_cover(path: Path, names: set[str], base: int) -> bool:
    """Whether /etc/subuid (or subgid) lets one of `names` map [base, base + UID_RANGE)."""
    return any(
        start <= base and base + UID_RANGE <= start + count
        for start, count in _subid_ranges(path, names)
    )


def user_namespace_argv(base: int, command: list[str]) -> list[str]:
    """`command` as root of a new user namespace that maps us to 0 and the
    browsers' uids and gids to themselves (newuidmap, from /etc/subuid and subgid)."""
    return [
        "unshare",
        "--map-root-user",
        f"--map-users={base},{base},{UID_RANGE}",
        f"--map-groups={base},{base},{UID_RANGE}",
        "--",
        *command,
    ]


def can_make_user_namespace(base: int) -> bool:
    uid = os.getuid()
    try:
        names = {pwd.getpwuid(uid).pw_name, str(uid)}
    except KeyError:
        # newuidmap needs our name.
        return False
    return (
        shutil.which("unshare") is not None
        and shutil.which("newuidmap") is not None
        and subids_cover(Path("/etc/subuid"), names, base)
        and subids_cover(Path("/etc/subgid"), names, base)
    )


def enter_user_namespace(base: int) -> None:
    """Unprivileged, with the browsers' uids in /etc/subuid and subgid: run this
    process again as root of its own user namespace (it has no more privilege on
    the host than before: it is its user there, and the browsers' uids)."""
    if os.geteuid() == 0 or not can_make_user_namespace(base):
        return
    os.execvp("unshare", user_namespace_argv(base, [sys.executable, *sys.orig_argv[1:]]))
