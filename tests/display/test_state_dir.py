"""State records, reaping by identity, and X file clean-up (no X server needed)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from services.display.proc_info import (
    ProcessIdentity,
    find_orphaned_group_leaders,
    identify,
    is_running,
)
from services.display.state_dir import ProcessRecord, StateDir
from services.display.x_display_files import (
    display_held,
    lock_file,
    remove_display_files,
    socket_file,
)
from services.runtime.errors import FailedPrecondition
from services.runtime.processes import start_process, stop_process_group


@pytest.fixture
async def sleepers() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    processes = [await start_process(["sleep", "60"]) for _ in range(2)]
    yield processes
    for process in processes:
        await stop_process_group(process, 0.5)


async def test_reap_stops_recorded_processes_and_spares_reused_pids(
    tmp_path: Path, sleepers: list[asyncio.subprocess.Process]
) -> None:
    recorded, bystander = sleepers
    recorded_identity = identify(recorded.pid)
    bystander_identity = identify(bystander.pid)
    assert recorded_identity is not None
    assert bystander_identity is not None
    state = StateDir(tmp_path)
    state.acquire()
    state.write_slot_record("a", ProcessRecord(processes=[recorded_identity], token="tok"))
    state.write_token("tok", 5900)
    # Same pid and command line, another start time: a later process reusing the pid.
    reused = replace(bystander_identity, start_ticks=bystander_identity.start_ticks - 1)
    state.write_slot_record("b", ProcessRecord(processes=[reused]))

    reaped = await state.reap(grace=1.0)

    assert reaped == [recorded.pid]
    assert await asyncio.wait_for(recorded.wait(), 5) is not None
    assert is_running(bystander.pid)
    assert list(state.slots_dir.iterdir()) == []
    assert list(state.token_dir.iterdir()) == []
    state.release()


async def test_reap_finds_an_orphan_spawned_but_not_yet_recorded(tmp_path: Path) -> None:
    # A crash between spawn and record: only the intended command line is known.
    argv = ["sleep", "61.25"]
    # Orphaned like a slot program whose service died (its parent exits at once)...
    spawner = await start_process(
        [
            sys.executable,
            "-c",
            "import subprocess, sys; subprocess.Popen(sys.argv[1:], start_new_session=True)",
            *argv,
        ]
    )
    await spawner.wait()
    # ...and the same command line under a live parent: a running program's child.
    owned = await start_process(argv)
    orphans = [p for p in find_orphaned_group_leaders(tuple(argv)) if p.pid != owned.pid]
    assert len(orphans) == 1
    orphan = orphans[0]
    try:
        state = StateDir(tmp_path)
        state.acquire()
        state.write_slot_record("a", ProcessRecord(processes=[], pending=[argv]))
        assert await state.reap(grace=1.0) == [orphan.pid]
        assert not is_running(orphan.pid)
        assert is_running(owned.pid)
        state.release()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(orphan.pid, signal.SIGKILL)
        await stop_process_group(owned, 0.5)


def test_state_dir_is_taken_by_one_service_at_a_time(tmp_path: Path) -> None:
    first = StateDir(tmp_path)
    first.acquire()
    with pytest.raises(FailedPrecondition, match="another display service"):
        StateDir(tmp_path).acquire()
    first.release()
    second = StateDir(tmp_path)
    second.acquire()
    second.release()


def test_a_clean_stop_leaves_no_state_dir_and_a_dirty_one_keeps_it(tmp_path: Path) -> None:
    clean = StateDir(tmp_path / "clean")
    clean.acquire()
    clean.slot_dir("s1")
    clean.remove_slot("s1")
    clean.release()
    assert not clean.path.exists()
    # A slot whose processes were not stopped stays recorded for the next run to reap.
    dirty = StateDir(tmp_path / "dirty")
    dirty.acquire()
    dirty.write_slot_record("s1", ProcessRecord(processes=[], display=201))
    dirty.release()
    assert (dirty.slots_dir / "s1" / "record.json").exists()


def test_record_round_trip() -> None:
    identity = ProcessIdentity(pid=42, cmdline=("Xvnc", ":201"), start_ticks=1234)
    record = ProcessRecord(processes=[identity], display=201, x_server_pid=42, token="t")
    assert ProcessRecord.from_json(record.to_json()) == record


def test_display_files_of_another_server_stay(tmp_path: Path) -> None:
    (tmp_path / ".X11-unix").mkdir()
    lock_file(5, tmp_path).write_text("      1234\n")
    socket_file(5, tmp_path).write_text("")
    assert display_held(5, tmp_path)

    remove_display_files(5, server_pid=999, tmp=tmp_path)
    assert lock_file(5, tmp_path).exists()

    remove_display_files(5, server_pid=1234, tmp=tmp_path)
    assert not lock_file(5, tmp_path).exists()
    assert not socket_file(5, tmp_path).exists()
    assert not display_held(5, tmp_path)


def test_a_clean_stop_keeps_the_recordings_and_removes_the_rest(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.acquire()
    recordings = state.path / "recordings"
    recordings.mkdir()
    (recordings / "s1.mp4").write_bytes(b"video")
    state.write_token("tok", 5900)
    state.release()
    assert (recordings / "s1.mp4").read_bytes() == b"video"
    assert not state.token_dir.exists() and not state.slots_dir.exists()
    # Without recordings the whole dir goes, as before.
    (recordings / "s1.mp4").unlink()
    state.acquire()
    state.release()
    assert not state.path.exists()
