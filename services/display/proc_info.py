"""Reading /proc to recognise a process again after a restart of the service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessIdentity:
    """Enough to tell a process from a later one that reused its pid."""

    pid: int
    cmdline: tuple[str, ...]
    # Clock ticks after boot when the process started (/proc/<pid>/stat field 22).
    start_ticks: int


def _stat_fields(pid: int, proc: Path) -> list[str] | None:
    try:
        raw = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after it.
    return raw[raw.rindex(")") + 2 :].split()


def identify(pid: int, proc: Path = PROC) -> ProcessIdentity | None:
    """The identity of a live process, or None if it is gone or a zombie."""
    fields = _stat_fields(pid, proc)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    try:
        raw_cmdline = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    cmdline = tuple(part.decode(errors="replace") for part in raw_cmdline.split(b"\0") if part)
    # fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
    return ProcessIdentity(pid=pid, cmdline=cmdline, start_ticks=int(fields[19]))


def is_running(pid: int, proc: Path = PROC) -> bool:
    """Alive and not a zombie."""
    fields = _stat_fields(pid, proc)
    return fields is not None and fields[0] not in ("Z", "X")


def find_orphaned_group_leaders(
    cmdline: tuple[str, ...], proc: Path = PROC
) -> list[ProcessIdentity]:
    """Live processes running exactly `cmdline`, leading their own process group,
    whose parent is gone (they were handed to init). A process with a live
    parent belongs to a running program and is never returned."""
    found: list[ProcessIdentity] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        identity = identify(int(entry.name), proc)
        if identity is None or identity.cmdline != cmdline:
            continue
        fields = _stat_fields(identity.pid, proc)
        if fields is None:
            continue
        # fields[1] is field 4 (parent pid), fields[2] field 5 (process group id).
        parent, group = int(fields[1]), int(fields[2])
        if group == identity.pid and (parent == 1 or not is_running(parent)):
            found.append(identity)
    return found
