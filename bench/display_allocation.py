"""Cold vs warm slot allocation on both display backends, and the websockify choice.

    python -m bench.display_allocation [--samples N]

Allocation is timed as a session sees it: AllocateSlot over gRPC until the
answer (which comes after an RFB handshake through the slot's WebSocket). Cold:
no warm pool; warm: a pool of 2, refilled before each sample. The websockify
part compares one process per host routing by token file with one per slot.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from baton.display.v1 import display_pb2, display_pb2_grpc
from bench.bare import BARE_PASSWORD, bare_credentials
from services.display.display_argv import xvnc_argv
from services.display.rfb_client import probe
from services.display.server import start_display_server
from services.display.settings import Backend, DisplaySettings, NumberRange
from services.display.slot import Viewport
from services.display.websockify_router import pick_free_port, wait_for_tcp
from services.runtime.grpc_client import open_channel
from services.runtime.internal_auth import InternalToken
from services.runtime.processes import require_binary, start_process, stop_process_group

# In the bench's ranges (displays 500-599, ports 18500-18599), clear of the tests'.
DISPLAYS = NumberRange(580, 599)
VNC_PORTS = NumberRange(18580, 18599)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(round(fraction * (len(ordered) - 1)), len(ordered) - 1)
    return ordered[index]


def row(label: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return (
        f"{label:<34} {len(ms):>4} {statistics.median(ms):>9.1f} "
        f"{percentile(ms, 0.99):>9.1f} {min(ms):>9.1f} {max(ms):>9.1f}"
    )


HEADER = f"{'':<34} {'n':>4} {'p50 ms':>9} {'p99 ms':>9} {'min ms':>9} {'max ms':>9}"


async def wait_warm_ready(stub: display_pb2_grpc.DisplayServiceAsyncStub, count: int) -> None:
    while True:
        capacity = await stub.GetCapacity(display_pb2.GetCapacityRequest())
        if capacity.warm_slots_ready >= count:
            return
        await asyncio.sleep(0.01)


async def allocation_samples(backend: Backend, warm: bool, samples: int) -> list[float]:
    settings = DisplaySettings(
        internal_token=InternalToken.generate(),
        host_id="bench",
        backend=backend,
        max_slots=4,
        warm_slots=2 if warm else 0,
        displays=DISPLAYS,
        vnc_ports=VNC_PORTS,
        state_dir=Path(tempfile.mkdtemp(prefix="baton-bench-display-")),
    )
    running = await start_display_server(settings)
    channel = open_channel(f"127.0.0.1:{running.port}", settings.internal_token)
    stub = display_pb2_grpc.DisplayServiceStub(channel)
    times: list[float] = []
    try:
        for _ in range(samples):
            if warm:
                await wait_warm_ready(stub, 2)
            started = time.perf_counter()
            answer = await stub.AllocateSlot(display_pb2.AllocateSlotRequest(session_id="bench"))
            times.append(time.perf_counter() - started)
            if answer.from_warm_pool != warm:
                raise RuntimeError(f"expected from_warm_pool={warm}")
            await stub.ReleaseSlot(display_pb2.ReleaseSlotRequest(slot_id=answer.slot.id))
    finally:
        await channel.close(None)
        await running.stop()
        shutil.rmtree(settings.state_dir, ignore_errors=True)
    return times


async def timed(action: Callable[[], Awaitable[object]], samples: int) -> list[float]:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        await action()
        times.append(time.perf_counter() - started)
    return times


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def websockify_samples(samples: int) -> tuple[list[str], int]:
    """Start-up and per-connection cost: token routing vs one websockify per slot."""
    xvnc = require_binary("Xvnc", "tigervnc-standalone-server")
    display, vnc_port = DISPLAYS.last, VNC_PORTS.last
    password_file, xauthority = bare_credentials(display)
    server = await start_process(
        xvnc_argv(xvnc, display, Viewport(1280, 720), vnc_port, password_file, xauthority)
    )
    lines: list[str] = []
    try:
        await wait_for_tcp(vnc_port, time.monotonic() + 10, server)
        token_dir = Path(tempfile.mkdtemp(prefix="baton-bench-tokens-"))
        (token_dir / "slot").write_text(f"127.0.0.1:{vnc_port}\n")
        shared_port = pick_free_port()
        shared = await start_process(
            [
                sys.executable,
                "-m",
                "websockify",
                "--token-plugin",
                "TokenFileName",
                "--token-source",
                str(token_dir),
                f"127.0.0.1:{shared_port}",
            ]
        )

        async def start_one_per_slot() -> None:
            port = pick_free_port()
            process = await start_process(
                [sys.executable, "-m", "websockify", f"127.0.0.1:{port}", f"127.0.0.1:{vnc_port}"]
            )
            await wait_for_tcp(port, time.monotonic() + 10, process)
            await stop_process_group(process, 1.0)

        def add_token() -> Awaitable[None]:
            (token_dir / "other").write_text(f"127.0.0.1:{vnc_port}\n")
            return asyncio.sleep(0)

        own_port = pick_free_port()
        own = await start_process(
            [sys.executable, "-m", "websockify", f"127.0.0.1:{own_port}", f"127.0.0.1:{vnc_port}"]
        )
        try:
            await wait_for_tcp(shared_port, time.monotonic() + 10, shared)
            await wait_for_tcp(own_port, time.monotonic() + 10, own)
            shared_url = f"ws://127.0.0.1:{shared_port}/websockify?token=slot"
            own_url = f"ws://127.0.0.1:{own_port}/websockify"
            await probe(shared_url, BARE_PASSWORD)
            await probe(own_url, BARE_PASSWORD)
            measured = [
                ("start a websockify (one per slot)", start_one_per_slot),
                ("add a token file (one per host)", add_token),
                ("connect+RFB handshake, per slot", lambda: probe(own_url, BARE_PASSWORD)),
                ("connect+RFB handshake, by token", lambda: probe(shared_url, BARE_PASSWORD)),
            ]
            for label, action in measured:
                lines.append(row(label, await timed(action, samples)))
            memory = rss_kib(own.pid)
        finally:
            await stop_process_group(shared, 1.0)
            await stop_process_group(own, 1.0)
            shutil.rmtree(token_dir, ignore_errors=True)
    finally:
        await stop_process_group(server, 1.0)
    return lines, memory


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    print(f"slot allocation over gRPC, 1280x720, {args.samples} samples each")
    print(HEADER)
    for backend in (Backend.XVNC, Backend.XVFB_X11VNC):
        for warm in (False, True):
            samples = await allocation_samples(backend, warm, args.samples)
            print(row(f"{backend.value} {'warm' if warm else 'cold'}", samples), flush=True)
    print()
    print("websockify: one per host (token files) vs one per slot")
    print(HEADER)
    lines, memory = await websockify_samples(args.samples)
    for line in lines:
        print(line)
    print(f"resident memory of one idle websockify: {memory / 1024:.1f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
