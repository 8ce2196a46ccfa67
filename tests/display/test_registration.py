"""A worker host in the etcd registry: real display services, real etcd, and the
session side's EtcdWorkerDirectory following them (README.md, "Worker registry")."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from baton.display.v1 import display_pb2, display_pb2_grpc
from services.display.server import start_display_host
from services.display.settings import DisplaySettings, NumberRange
from services.display.state_dir import StateDir
from services.runtime.grpc_client import open_channel
from services.runtime.worker_registry import WorkerRecord
from services.session.etcd_directory import EtcdWorkerDirectory
from services.session.workers import LostHost
from tests.conftest import (
    INTERNAL_TOKEN,
    eventually,
    free_port,
    require_binary,
    start_etcd,
    stop_etcd,
)

REPO = Path(__file__).resolve().parents[2]
TTL_S = 2


def numbers(chunk: int) -> tuple[NumberRange, NumberRange]:
    """This suite's displays 1250-1299 and VNC ports 19450-19499, five per test."""
    return (
        NumberRange(1250 + 5 * chunk, 1254 + 5 * chunk),
        NumberRange(19450 + 5 * chunk, 19454 + 5 * chunk),
    )


@contextlib.asynccontextmanager
async def directory_of(endpoint: str) -> AsyncIterator[EtcdWorkerDirectory]:
    directory = EtcdWorkerDirectory((endpoint,), INTERNAL_TOKEN)
    await directory.start()
    try:
        yield directory
    finally:
        await directory.close()


async def record_where(
    directory: EtcdWorkerDirectory, host_id: str, within_s: float = 10, **fields: object
) -> WorkerRecord:
    """The host's record once it has `fields`."""

    def matches() -> bool:
        record = directory.record(host_id)
        return record is not None and all(getattr(record, k) == v for k, v in fields.items())

    await eventually(matches, within_s)
    record = directory.record(host_id)
    assert record is not None
    return record


class DisplayProcess:
    """`python -m services.display` in its own process group, as operators run it."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, state_dir: Path) -> None:
        self.process = process
        self.port = port
        self.state_dir = state_dir

    @classmethod
    async def start(cls, tmp_path: Path, chunk: int, **env: str) -> DisplayProcess:
        require_binary("Xvnc", "tigervnc-standalone-server")
        displays, ports = numbers(chunk)
        port = free_port()
        environ = {
            **os.environ,
            "BATON_DISPLAY_PORT": str(port),
            "BATON_DISPLAY_STATE_DIR": str(tmp_path / "state"),
            "BATON_DISPLAY_NUMBERS": f"{displays.first}-{displays.last}",
            "BATON_VNC_PORTS": f"{ports.first}-{ports.last}",
            "BATON_MAX_SLOTS": "2",
            "BATON_WARM_SLOTS": "0",
            "BATON_DISPLAY_STOP_GRACE": "1",
            "BATON_WORKER_LEASE_TTL_S": str(TTL_S),
            "BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value,
            **env,
        }
        with (tmp_path / "service.log").open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.display",
                cwd=REPO,
                env=environ,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        return cls(process, port, tmp_path / "state")

    @contextlib.asynccontextmanager
    async def stub(self) -> AsyncIterator[display_pb2_grpc.DisplayServiceAsyncStub]:
        async with open_channel(f"127.0.0.1:{self.port}", INTERNAL_TOKEN) as channel:
            await asyncio.wait_for(channel.channel_ready(), 20)
            yield display_pb2_grpc.DisplayServiceStub(channel)

    def group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    async def kill_group(self) -> None:
        """What kill -9 of a whole worker host does; also the tests' clean-up."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        await self.process.wait()
        await eventually(lambda: not self.group_alive(), 5)


@contextlib.asynccontextmanager
async def cleaned_up(processes: list[DisplayProcess]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.process.pid, signal.SIGKILL)
        # Its slots and websockify have process groups of their own, as on a
        # real host; a successor would reap them from the state dir: do so.
        for state in {process.state_dir for process in processes}:
            if state.exists():  # a clean stop removes it
                await StateDir(state).reap(1.0)


async def allocate(
    stub: display_pb2_grpc.DisplayServiceAsyncStub, session_id: str
) -> display_pb2.Slot:
    reply = await stub.AllocateSlot(display_pb2.AllocateSlotRequest(session_id=session_id))
    return reply.slot


async def test_the_record_follows_capacity_and_goes_when_the_host_stops(
    etcd_endpoint: str, tmp_path: Path
) -> None:
    require_binary("Xvnc", "tigervnc-standalone-server")
    displays, ports = numbers(0)
    settings = DisplaySettings(
        internal_token=INTERNAL_TOKEN,
        host_id="capacity-host",
        max_slots=2,
        warm_slots=1,
        displays=displays,
        vnc_ports=ports,
        state_dir=tmp_path / "state",
        stop_grace=1.0,
        etcd_endpoints=(etcd_endpoint,),
        # Long, so that the key going at once shows the lease was revoked.
        worker_lease_ttl_s=30,
        automation_advertise_address="127.0.0.1:7777",
    )
    async with directory_of(etcd_endpoint) as directory:
        lost = directory.lost_hosts()
        display = await start_display_host(settings)
        try:
            assert display.registration is not None
            record = await record_where(directory, "capacity-host", held=0, warm_ready=1)
            assert record.epoch == display.registration.record.epoch
            assert record.display_address == f"127.0.0.1:{display.running.port}"
            assert record.automation_address == "127.0.0.1:7777"
            assert record.stream_address.startswith("127.0.0.1:")
            assert (record.max_slots, record.draining) == (2, False)

            # Through the directory's own channels to the host.
            host = directory.host("capacity-host")
            assert host is not None
            slot = await host.display.allocate_slot(
                "s1", display_pb2.Viewport(width=1280, height=720)
            )
            assert slot.host_id == "capacity-host"
            await record_where(directory, "capacity-host", held=1, warm_ready=1)
            await host.display.release_slot(slot.id)
            await record_where(directory, "capacity-host", held=0, warm_ready=1)
        finally:
            stopped_at = time.monotonic()
            await display.running.stop()
        gone = await asyncio.wait_for(anext(lost), 5)
        assert gone == LostHost("capacity-host", record.epoch)
        assert time.monotonic() - stopped_at < 5
        assert directory.host("capacity-host") is None


@pytest.mark.timeout(60)
async def test_a_killed_host_is_lost_within_the_ttl_and_returns_with_a_new_epoch(
    etcd_endpoint: str, tmp_path: Path
) -> None:
    env = {"BATON_HOST_ID": "killed-host", "BATON_ETCD_ENDPOINTS": etcd_endpoint}
    processes: list[DisplayProcess] = []
    async with cleaned_up(processes), directory_of(etcd_endpoint) as directory:
        lost = directory.lost_hosts()
        processes.append(await DisplayProcess.start(tmp_path, 1, **env))
        first = await record_where(directory, "killed-host", within_s=20)

        # kill -9: no revoke, the lease runs out.
        processes[0].process.kill()
        killed_at = time.monotonic()
        gone = await asyncio.wait_for(anext(lost), TTL_S + 2)
        assert gone == LostHost("killed-host", first.epoch)
        assert time.monotonic() - killed_at <= TTL_S + 2
        assert directory.host("killed-host") is None
        await processes[0].kill_group()

        processes.append(await DisplayProcess.start(tmp_path, 1, **env))
        second = await record_where(directory, "killed-host", within_s=20)
        assert second.epoch != first.epoch
        async with processes[1].stub() as stub:
            await allocate(stub, "s")
        await record_where(directory, "killed-host", held=1)

        # Killed and restarted at once: the new epoch replaces the old one
        # before its lease ends, and the old epoch is reported lost then.
        await processes[1].kill_group()
        processes.append(await DisplayProcess.start(tmp_path, 1, **env))
        third = await record_where(directory, "killed-host", within_s=20, held=0)
        assert third.epoch not in (first.epoch, second.epoch)
        assert await asyncio.wait_for(anext(lost), 1) == LostHost("killed-host", second.epoch)
        # Its lease ending later takes nothing with it.
        await asyncio.sleep(TTL_S + 1)
        assert directory.host("killed-host") is not None
        await processes[2].kill_group()


@pytest.mark.timeout(60)
async def test_sigterm_drains_until_the_last_slot_is_released(
    etcd_endpoint: str, tmp_path: Path
) -> None:
    env = {
        "BATON_HOST_ID": "draining-host",
        "BATON_ETCD_ENDPOINTS": etcd_endpoint,
        "BATON_DRAIN_TIMEOUT_S": "40",
    }
    display = await DisplayProcess.start(tmp_path, 2, **env)
    async with cleaned_up([display]):
        async with directory_of(etcd_endpoint) as directory, display.stub() as stub:
            lost = directory.lost_hosts()
            await record_where(directory, "draining-host", within_s=20)
            slot = await allocate(stub, "s")
            await record_where(directory, "draining-host", held=1)

            display.process.send_signal(signal.SIGTERM)
            record = await record_where(directory, "draining-host", within_s=1, draining=True)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await allocate(stub, "late")
            assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert refused.value.details() == "host draining-host is draining"
            # The live slot goes on.
            reply = await stub.GetSlot(display_pb2.GetSlotRequest(slot_id=slot.id))
            assert reply.slot.state == display_pb2.SLOT_STATE_READY
            assert display.process.returncode is None

            await stub.ReleaseSlot(display_pb2.ReleaseSlotRequest(slot_id=slot.id))
            assert await asyncio.wait_for(display.process.wait(), 10) == 0
            # The lease was revoked, long before it could have expired.
            assert await asyncio.wait_for(anext(lost), 1) == LostHost("draining-host", record.epoch)
        await eventually(lambda: not display.group_alive(), 5)


@pytest.mark.timeout(60)
async def test_a_drain_ends_at_its_timeout_and_stops_every_slot(
    etcd_endpoint: str, tmp_path: Path
) -> None:
    env = {
        "BATON_HOST_ID": "slow-drain-host",
        "BATON_ETCD_ENDPOINTS": etcd_endpoint,
        "BATON_DRAIN_TIMEOUT_S": "2",
    }
    display = await DisplayProcess.start(tmp_path, 3, **env)
    async with cleaned_up([display]):
        async with directory_of(etcd_endpoint) as directory, display.stub() as stub:
            await record_where(directory, "slow-drain-host", within_s=20)
            await allocate(stub, "s")
            display.process.send_signal(signal.SIGTERM)
            await record_where(directory, "slow-drain-host", within_s=1, draining=True)
            await asyncio.sleep(1)
            # Still draining for the slot nobody released.
            assert display.process.returncode is None
            assert await asyncio.wait_for(display.process.wait(), 10) == 0
        await eventually(lambda: not display.group_alive(), 5)


async def test_without_etcd_sigterm_stops_at_once(tmp_path: Path) -> None:
    display = await DisplayProcess.start(tmp_path, 4, BATON_DRAIN_TIMEOUT_S="40")
    async with cleaned_up([display]):
        async with display.stub() as stub:
            await allocate(stub, "s")
        display.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(display.process.wait(), 10) == 0
        await eventually(lambda: not display.group_alive(), 5)


@pytest.mark.timeout(60)
async def test_the_host_registers_again_after_an_etcd_outage(tmp_path: Path) -> None:
    require_binary("Xvnc", "tigervnc-standalone-server")
    client_port, peer_port = free_port(), free_port()
    endpoint = f"127.0.0.1:{client_port}"
    etcd = start_etcd(tmp_path / "etcd", client_port, peer_port)
    displays, ports = numbers(5)
    settings = DisplaySettings(
        internal_token=INTERNAL_TOKEN,
        host_id="outage-host",
        max_slots=2,
        warm_slots=0,
        displays=displays,
        vnc_ports=ports,
        state_dir=tmp_path / "state",
        stop_grace=1.0,
        etcd_endpoints=(endpoint,),
        # An outage (3 s) well inside the lease: the host must not be lost.
        worker_lease_ttl_s=10,
    )
    display = None
    try:
        await eventually(lambda: _listening(client_port), 20)
        async with directory_of(endpoint) as directory:
            lost = asyncio.ensure_future(anext(directory.lost_hosts()))
            display = await start_display_host(settings)
            record = await record_where(directory, "outage-host", held=0)

            stop_etcd(etcd)
            # The display service goes on without its registry...
            async with open_channel(f"127.0.0.1:{display.running.port}", INTERNAL_TOKEN) as ch:
                stub = display_pb2_grpc.DisplayServiceStub(ch)
                await allocate(stub, "during-the-outage")
            await asyncio.sleep(3)
            etcd = start_etcd(tmp_path / "etcd", client_port, peer_port)

            # ...and registers again once etcd is back, with what changed meanwhile.
            back = await record_where(directory, "outage-host", within_s=15, held=1)
            assert back.epoch == record.epoch
            assert not lost.done()
            lost.cancel()
    finally:
        if display is not None:
            await display.running.stop()
        stop_etcd(etcd)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
