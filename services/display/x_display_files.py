"""The files an X server leaves on disk: its lock file and its unix socket."""

from __future__ import annotations

import contextlib
from pathlib import Path

X_TMP = Path("/tmp")


def lock_file(display: int, tmp: Path = X_TMP) -> Path:
    return tmp / f".X{display}-lock"


def socket_file(display: int, tmp: Path = X_TMP) -> Path:
    return tmp / ".X11-unix" / f"X{display}"


def display_held(display: int, tmp: Path = X_TMP) -> bool:
    """Whether some X server (ours or not) holds or left behind this display."""
    return lock_file(display, tmp).exists() or socket_file(display, tmp).exists()


def lock_owner(display: int, tmp: Path = X_TMP) -> int | None:
    """The pid written in the display's lock file, if it can be read."""
    try:
        return int(lock_file(display, tmp).read_text().strip())
    except (OSError, ValueError):
        return None


def remove_display_files(display: int, server_pid: int, tmp: Path = X_TMP) -> None:
    """Remove the lock and socket of a display our X server (`server_pid`) held.

    An X server removes them itself on SIGTERM but not on SIGKILL. Files whose
    lock names another pid belong to someone else and stay.
    """
    owner = lock_owner(display, tmp)
    if owner is not None and owner != server_pid:
        return
    for path in (socket_file(display, tmp), lock_file(display, tmp)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
