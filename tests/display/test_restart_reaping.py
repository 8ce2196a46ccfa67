"""A display service killed with live slots: the next run reaps them, and nothing else."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from baton.display.v1 import display_pb2, display_pb2_grpc
from services.display.proc_info import is_running
from services.display.server import start_display_server
from services.display.settings import Backend, DisplaySettings, NumberRange
from services.display.state_dir import ProcessRecord, StateDir
from services.display.x_display_files import display_held, lock_file, lock_owner
from services.runtime.errors import FailedPrecondition
from services.runtime.grpc_client import open_channel
from tests.conftest import INTERNAL_TOKEN, free_port, require_binary
from tests.display.test_display_service import require_backend

REPO = Path(__file__).resolve().parents[2]
DISPLAYS = {Backend.XVNC: NumberRange(240, 249), Backend.XVFB_X11VNC: NumberRange(250, 259)}
VNC_PORTS = {Backend.XVNC: "17240-17249", Backend.XVFB_X11VNC: "17250-17259"}
# The unrelated X server lives outside the service's range, in this suite's 290-299.
BYSTANDER_DISPLAYS = range(290, 300)


async def start_bystander_xvfb() -> tuple[asyncio.subprocess.Process, int]:
    """An Xvfb that is none of the service's business; the test owns and stops it."""
    xvfb = require_binary("Xvfb", "xvfb")
    display = next(n for n in BYSTANDER_DISPLAYS if not display_held(n))
    process = await asyncio.create_subprocess_exec(
        xvfb,
        f":{display}",
        "-nolisten",
        "tcp",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    while lock_owner(display) != process.pid:
        if process.returncode is not None:
            raise AssertionError(f"bystander Xvfb on :{display} exited")
        await asyncio.sleep(0.01)
    return process, display


async def allocate_when_up(port: int, count: int) -> list[display_pb2.Slot]:
    async with open_channel(f"127.0.0.1:{port}", INTERNAL_TOKEN) as channel:
        await channel.channel_ready()
        stub = display_pb2_grpc.DisplayServiceStub(channel)
        responses = [
            await stub.AllocateSlot(display_pb2.AllocateSlotRequest(session_id=f"old-{i}"))
            for i in range(count)
        ]
        # And the warm pool refilled, so the run also leaves a warm slot behind.
        while True:
            capacity = await stub.GetCapacity(display_pb2.GetCapacityRequest())
            if capacity.warm_slots_ready == 1:
                break
            await asyncio.sleep(0.02)
    return [r.slot for r in responses]


@pytest.mark.parametrize("backend", [Backend.XVNC, Backend.XVFB_X11VNC], ids=lambda b: b.value)
async def test_restart_reaps_the_earlier_run_and_spares_other_x_servers(
    backend: Backend, tmp_path: Path
) -> None:
    require_backend(backend)
    state_dir = tmp_path / "state"
    port = free_port()
    displays = DISPLAYS[backend]
    env = {
        **os.environ,
        "BATON_DISPLAY_PORT": str(port),
        "BATON_DISPLAY_BACKEND": backend.value,
        "BATON_DISPLAY_STATE_DIR": str(state_dir),
        "BATON_DISPLAY_NUMBERS": f"{displays.first}-{displays.last}",
        "BATON_VNC_PORTS": VNC_PORTS[backend],
        "BATON_MAX_SLOTS": "3",
        "BATON_WARM_SLOTS": "1",
        "BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value,
    }
    bystander, bystander_display = await start_bystander_xvfb()
    log_path = tmp_path / "service.log"
    with log_path.open("wb") as log:
        service = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.display",
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        slots = await asyncio.wait_for(allocate_when_up(port, 2), timeout=30)
        # Held slots, the warm slot and websockify: everything the run recorded.
        records = [*(state_dir / "slots").glob("*/record.json"), state_dir / "websockify.json"]
        old_pids = [
            p.pid for path in records for p in ProcessRecord.from_json(path.read_text()).processes
        ]
        assert len(records) == 4
        old_displays = [int(s.display.lstrip(":")) for s in slots]

        # The service dies without cleaning up: its slots outlive it.
        service.kill()
        await service.wait()
        assert all(is_running(pid) for pid in old_pids)

        settings = DisplaySettings(
            internal_token=INTERNAL_TOKEN,
            backend=backend,
            max_slots=3,
            warm_slots=0,
            displays=displays,
            vnc_ports=NumberRange.parse("ports", VNC_PORTS[backend]),
            state_dir=state_dir,
            stop_grace=1.0,
        )
        running = await start_display_server(settings)
        try:
            assert [pid for pid in old_pids if is_running(pid)] == []
            assert [d for d in old_displays if display_held(d)] == []
            # Nothing else of the old run either (a warm slot may have been starting).
            assert [d for d in displays if display_held(d)] == []
            assert list((state_dir / "slots").iterdir()) == []
            assert list((state_dir / "tokens").iterdir()) == []
            assert bystander.returncode is None
            assert lock_owner(bystander_display) == bystander.pid
            assert is_running(bystander.pid)
        finally:
            await running.stop()
    finally:
        if service.returncode is None:
            service.kill()
            await service.wait()
        # Whatever the outcome, leave no slot of either run behind.
        leftover_state = StateDir(state_dir)
        leftover_state.acquire()
        await leftover_state.reap(grace=1.0)
        leftover_state.release()
        bystander.send_signal(signal.SIGTERM)
        await bystander.wait()
    assert not lock_file(bystander_display).exists()


async def test_a_second_service_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    require_backend(Backend.XVNC)
    settings = DisplaySettings(
        internal_token=INTERNAL_TOKEN,
        max_slots=1,
        warm_slots=0,
        displays=NumberRange(260, 261),
        vnc_ports=NumberRange(17260, 17261),
        state_dir=tmp_path,
    )
    running = await start_display_server(settings)
    try:
        with pytest.raises(FailedPrecondition, match="another display service"):
            await start_display_server(settings)
    finally:
        await running.stop()
