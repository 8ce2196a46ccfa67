"""Recording a slot's display with a real Xvnc and ffmpeg, over gRPC."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from baton.display.v1 import display_pb2, display_pb2_grpc
from services.display.server import start_display_server
from services.display.settings import Backend, DisplaySettings, NumberRange
from services.runtime.grpc_client import open_channel
from services.runtime.grpc_server import RunningServer
from services.runtime.processes import pid_alive
from tests.conftest import INTERNAL_TOKEN, require_binary
from tests.display.host_inspection import slot_record

pytestmark = pytest.mark.asyncio(loop_scope="module")

# This suite's displays and VNC ports (2700-2709 / 22700-22709).
DISPLAYS = NumberRange(2700, 2709)
VNC_PORTS = NumberRange(22700, 22709)


class Host:
    def __init__(
        self, settings: DisplaySettings, running: RunningServer, channel: grpc.aio.Channel
    ):
        self.settings = settings
        self.running = running
        self.stub = display_pb2_grpc.DisplayServiceStub(channel)

    async def allocate(self, session_id: str, record: bool) -> display_pb2.Slot:
        request = display_pb2.AllocateSlotRequest(session_id=session_id, record=record)
        return (await self.stub.AllocateSlot(request)).slot

    async def release(self, slot_id: str) -> None:
        await self.stub.ReleaseSlot(display_pb2.ReleaseSlotRequest(slot_id=slot_id))

    async def read(self, session_id: str, offset: int = 0, length: int = 0) -> tuple[int, bytes]:
        request = display_pb2.ReadRecordingRequest(
            session_id=session_id, offset=offset, length=length
        )
        size = -1
        data = b""
        async for message in self.stub.ReadRecording(request):
            if size < 0:
                size = message.size
            data += message.data
        return size, data


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def host(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Host]:
    require_binary("Xvnc", "tigervnc-standalone-server")
    require_binary("ffmpeg", "ffmpeg")
    settings = DisplaySettings(
        internal_token=INTERNAL_TOKEN,
        host_id="recording-host",
        backend=Backend.XVNC,
        max_slots=3,
        warm_slots=0,
        displays=DISPLAYS,
        vnc_ports=VNC_PORTS,
        state_dir=tmp_path_factory.mktemp("display-recording"),
        recording_dir=tmp_path_factory.mktemp("recordings"),
        stop_grace=1.0,
    )
    running = await start_display_server(settings)
    channel = open_channel(f"127.0.0.1:{running.port}", INTERNAL_TOKEN)
    try:
        yield Host(settings, running, channel)
    finally:
        await channel.close(None)
        await running.stop()


async def ffprobe(path: Path) -> dict[str, object]:
    process = await asyncio.create_subprocess_exec(
        "ffprobe",
        "-v",
        "error",
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    result: dict[str, object] = json.loads(out)
    return result


def environ_of(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


def is_ffmpeg(pid: int) -> bool:
    return b"ffmpeg" in Path(f"/proc/{pid}/cmdline").read_bytes()


async def recorder_pid(host: Host, slot_id: str) -> int:
    """ffmpeg's pid, from /proc by the slot's recorded pids, once its exec is done:
    the slot is answered right after ffmpeg is spawned, and under load /proc may
    still show the forked child's empty command line for a while."""
    record = slot_record(host.settings.state_dir, slot_id)
    deadline = time.monotonic() + 10
    while True:
        pids = [p.pid for p in record.processes if is_ffmpeg(p.pid)]
        if pids or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert len(pids) == 1, record
    return pids[0]


async def test_a_recorded_slot_is_a_video_as_long_as_it_was_held(
    host: Host, tmp_path: Path
) -> None:
    slot = await host.allocate("rec-one", record=True)
    assert slot.HasField("recording_start_time")
    pid = await recorder_pid(host, slot.id)
    # XAUTHORITY names the slot's cookie: without it x11grab would be refused.
    assert f"XAUTHORITY={slot.xauthority}".encode() in environ_of(pid)
    held_from = time.monotonic()
    await asyncio.sleep(4.0)
    # Readable while it is being written (fragmented MP4): ffprobe reads a part.
    size, partial = await host.read("rec-one")
    assert size == len(partial) > 0
    (tmp_path / "partial.mp4").write_bytes(partial)
    assert float((await ffprobe(tmp_path / "partial.mp4"))["format"]["duration"]) > 1.0  # type: ignore[index]
    await asyncio.sleep(2.0)
    await host.release(slot.id)
    held_s = time.monotonic() - held_from
    assert not pid_alive(pid), "ffmpeg outlived its slot"
    size, whole = await host.read("rec-one")
    (tmp_path / "whole.mp4").write_bytes(whole)
    probe = await ffprobe(tmp_path / "whole.mp4")
    stream = probe["streams"][0]  # type: ignore[index]
    assert stream["codec_name"] == "h264"
    assert (stream["width"], stream["height"]) == (1280, 720)
    duration = float(probe["format"]["duration"])  # type: ignore[index]
    assert abs(duration - held_s) < 1.0, (duration, held_s)
    # A byte range is exactly those bytes.
    _, middle = await host.read("rec-one", offset=100, length=1000)
    assert middle == whole[100:1100]


async def test_a_host_that_dies_loses_only_the_last_seconds(host: Host, tmp_path: Path) -> None:
    slot = await host.allocate("rec-killed", record=True)
    await asyncio.sleep(6.0)
    # As if the host died: ffmpeg gets no chance to finish its file.
    os.kill(await recorder_pid(host, slot.id), signal.SIGKILL)
    await host.release(slot.id)
    _, data = await host.read("rec-killed")
    (tmp_path / "killed.mp4").write_bytes(data)
    duration = float((await ffprobe(tmp_path / "killed.mp4"))["format"]["duration"])  # type: ignore[index]
    assert duration >= 6.0 - 2.5, duration


async def test_an_unrecorded_slot_has_no_recording(host: Host) -> None:
    slot = await host.allocate("not-recorded", record=False)
    try:
        assert not slot.HasField("recording_start_time")
        record = slot_record(host.settings.state_dir, slot.id)
        assert [p for p in record.processes if "Xvnc" in p.cmdline[0]], "the slot is live"
        assert not [p for p in record.processes if "ffmpeg" in p.cmdline[0]]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await host.read("not-recorded")
        assert refused.value.code() is grpc.StatusCode.NOT_FOUND
        assert "no recording of session not-recorded" in (refused.value.details() or "")
    finally:
        await host.release(slot.id)
