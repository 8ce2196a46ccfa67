"""The service's state dir: what its slots are, so a later run can reap them.

Layout:
    service.lock                 flock held while a service uses the dir
    websockify.json              the host websockify's process record
    tokens/<token>               websockify target for one slot ("127.0.0.1:port")
    slots/<slot id>/record.json  the slot's process record
    slots/<slot id>/*.log        the slot's program output
    recordings/<session id>.mp4  recorded sessions' videos (by default; recordings.py),
                                 kept by a clean stop

Reaping only kills a process whose pid, command line and start time all match
what this service recorded: a pid reused by anything else is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from services.display.proc_info import (
    ProcessIdentity,
    find_orphaned_group_leaders,
    identify,
    is_running,
)
from services.display.settings import RECORDINGS_DIR_NAME
from services.display.x_display_files import lock_owner, remove_display_files
from services.runtime.errors import FailedPrecondition

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessRecord:
    """What a slot (or the host websockify) left running."""

    processes: list[ProcessIdentity]
    display: int | None = None
    x_server_pid: int | None = None
    token: str | None = None
    # Programs about to be started, written before the spawn: a crash between
    # spawn and record still leaves enough to find them (exact command line,
    # leading their own process group).
    pending: list[list[str]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ProcessRecord:
        raw = json.loads(text)
        return cls(
            processes=[
                ProcessIdentity(
                    pid=int(p["pid"]),
                    cmdline=tuple(str(a) for a in p["cmdline"]),
                    start_ticks=int(p["start_ticks"]),
                )
                for p in raw["processes"]
            ],
            display=raw.get("display"),
            x_server_pid=raw.get("x_server_pid"),
            token=raw.get("token"),
            pending=[[str(a) for a in argv] for argv in raw.get("pending", [])],
        )


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock: IO[str] | None = None

    @property
    def token_dir(self) -> Path:
        return self.path / "tokens"

    @property
    def slots_dir(self) -> Path:
        return self.path / "slots"

    def acquire(self) -> None:
        """Take the dir for this service; fail if another live service has it."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.token_dir.mkdir(mode=0o700, exist_ok=True)
        self.slots_dir.mkdir(mode=0o700, exist_ok=True)
        lock = (self.path / "service.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise FailedPrecondition(
                f"another display service is running with state dir {self.path}"
            ) from None
        self._lock = lock

    def release(self) -> None:
        """Give the dir up; after a clean stop (no slot left to reap) remove it."""
        if self._lock is not None:
            # Still under the lock, so no other service takes it meanwhile.
            if self.slots_dir.is_dir() and not any(self.slots_dir.iterdir()):
                # Recordings outlive the service's runs (until their retention).
                recordings = self.path / RECORDINGS_DIR_NAME
                if recordings.is_dir() and any(recordings.iterdir()):
                    for entry in self.path.iterdir():
                        if entry.name not in (RECORDINGS_DIR_NAME, "service.lock"):
                            _remove(entry)
                else:
                    shutil.rmtree(self.path, ignore_errors=True)
            self._lock.close()
            self._lock = None

    def slot_dir(self, slot_id: str) -> Path:
        path = self.slots_dir / slot_id
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def write_slot_record(self, slot_id: str, record: ProcessRecord) -> None:
        _write_atomically(self.slot_dir(slot_id) / "record.json", record.to_json())

    def remove_slot(self, slot_id: str) -> None:
        shutil.rmtree(self.slots_dir / slot_id, ignore_errors=True)

    def write_token(self, token: str, vnc_port: int) -> None:
        _write_atomically(self.token_dir / token, f"127.0.0.1:{vnc_port}\n")

    def remove_token(self, token: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.token_dir / token).unlink()

    def write_websockify_record(self, record: ProcessRecord) -> None:
        _write_atomically(self.path / "websockify.json", record.to_json())

    def remove_websockify_record(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / "websockify.json").unlink()

    async def reap(self, grace: float) -> list[int]:
        """Stop what an earlier run of this service left; return the pids stopped."""
        stopped: list[int] = []
        records: list[tuple[Path, ProcessRecord]] = []
        websockify = self.path / "websockify.json"
        for path in [websockify, *sorted(self.slots_dir.glob("*/record.json"))]:
            try:
                records.append((path, ProcessRecord.from_json(path.read_text())))
            except FileNotFoundError:
                continue
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring unreadable state record %s", path)
                records.append((path, ProcessRecord(processes=[])))
        for path, record in records:
            processes = [*record.processes]
            for argv in record.pending:
                processes.extend(find_orphaned_group_leaders(tuple(argv)))
            stopped.extend(await _stop_recorded(processes, grace))
            if record.display is not None:
                owner = lock_owner(record.display)
                if owner is not None and (owner in stopped or not is_running(owner)):
                    remove_display_files(record.display, owner)
            if record.token:
                self.remove_token(record.token)
            if path == websockify:
                self.remove_websockify_record()
            else:
                shutil.rmtree(path.parent, ignore_errors=True)
        # Leftover slot dirs without a record (a crash before it was written).
        for leftover in self.slots_dir.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
        if stopped:
            log.info("reaped %d processes left by an earlier run: %s", len(stopped), stopped)
        return stopped


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _signal(identity: ProcessIdentity, sig: signal.Signals) -> None:
    # Our programs lead their own process group: signal the whole group, but
    # only when the process still is the one we recorded and leads its group.
    if identify(identity.pid) != identity:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(identity.pid) == identity.pid:
            os.killpg(identity.pid, sig)
        else:
            os.kill(identity.pid, sig)


async def _stop_recorded(processes: list[ProcessIdentity], grace: float) -> list[int]:
    alive = [p for p in processes if identify(p.pid) == p]
    for identity in alive:
        _signal(identity, signal.SIGTERM)
    await _wait_gone(alive, grace)
    for identity in alive:
        _signal(identity, signal.SIGKILL)
    # SIGKILL cannot be refused, but a process in uninterruptible sleep takes a while.
    await _wait_gone(alive, 5.0)
    return [p.pid for p in alive]


async def _wait_gone(processes: list[ProcessIdentity], seconds: float) -> None:
    # They are not our children (their parent was the earlier run): no wait()
    # to block on, so poll /proc.
    step = 0.02
    for _ in range(max(int(seconds / step), 1)):
        if not any(is_running(p.pid) for p in processes):
            return
        await asyncio.sleep(step)
