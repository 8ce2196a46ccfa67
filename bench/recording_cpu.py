"""CPU of one recorded session's ffmpeg (services/display/README.md, "Recording").

python -m bench.recording_cpu [seconds]: a display service with one recorded
slot; ffmpeg's utime+stime over `seconds` (30) with the screen idle, then with
Chromium on it showing a page that scrolls continuously. Displays 2720-2729.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

from baton.display.v1 import display_pb2, display_pb2_grpc
from bench.proc_stats import cpu_seconds
from services.display.server import start_display_server
from services.display.settings import Backend, DisplaySettings, NumberRange
from services.runtime.grpc_client import open_channel
from services.runtime.internal_auth import InternalToken
from services.runtime.processes import start_process, stop_process_group

SCROLLING_PAGE = (
    "data:text/html,<body style='margin:0'><div id=d style='height:20000px;"
    "background:repeating-linear-gradient(0deg,%23c33 0 40px,%23fff 40px 80px)'></div>"
    "<script>setInterval(()=>scrollBy(0,8),16)</script>"
)


def _ffmpeg_pid(state_dir: Path) -> int:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"ffmpeg") and str(state_dir).encode() in b" ".join(argv):
                return int(proc.name)
    raise RuntimeError("no ffmpeg recording the slot")


async def _cpu_percent(pid: int, seconds: float) -> float:
    before = cpu_seconds([pid])[pid]
    await asyncio.sleep(seconds)
    return 100.0 * (cpu_seconds([pid])[pid] - before) / seconds


async def main(seconds: float) -> None:
    token = InternalToken("bench-recording-token-0123456789")
    work = Path(tempfile.mkdtemp(prefix="baton-bench-recording-"))
    settings = DisplaySettings(
        internal_token=token,
        backend=Backend.XVNC,
        max_slots=1,
        warm_slots=0,
        displays=NumberRange(2720, 2729),
        vnc_ports=NumberRange(22720, 22729),
        state_dir=work / "display",
    )
    running = await start_display_server(settings)
    browser = None
    try:
        async with open_channel(f"127.0.0.1:{running.port}", token) as channel:
            stub = display_pb2_grpc.DisplayServiceStub(channel)
            request = display_pb2.AllocateSlotRequest(session_id="bench", record=True)
            slot = (await stub.AllocateSlot(request)).slot
            pid = _ffmpeg_pid(settings.state_dir)
            await asyncio.sleep(2.0)
            idle = await _cpu_percent(pid, seconds)
            chromium = shutil.which("chromium") or "chromium"
            argv = [
                chromium,
                "--no-sandbox",
                "--user-data-dir=" + str(work / "profile"),
                "--kiosk",
                "--window-size=1280,720",
                SCROLLING_PAGE,
            ]
            env = {**os.environ, "DISPLAY": slot.display, "XAUTHORITY": slot.xauthority}
            browser = await start_process(argv, env=env)
            await asyncio.sleep(5.0)
            scrolling = await _cpu_percent(pid, seconds)
            await stub.ReleaseSlot(display_pb2.ReleaseSlotRequest(slot_id=slot.id))
        print(f"ffmpeg CPU per recorded session (1280x720, 5 fps, {seconds:g} s each):")
        print(f"  idle page:      {idle:5.1f} % of one core")
        print(f"  scrolling page: {scrolling:5.1f} % of one core")
    finally:
        if browser is not None:
            await stop_process_group(browser, 2.0)
        await running.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 30.0))
