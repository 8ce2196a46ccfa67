"""How long PauseTask takes: p50/p99 over pauses between steps of a running task.

    python -m bench.automation_pause [--samples 100]

A real automation server drives headful Chromium on a private Xvfb through a
task of many short steps (key presses on a local page). Each sample waits for a
step to succeed, then times PauseTask over gRPC until it returns (no action in
flight, none will start), then resumes. A second series pauses at a random
moment, so some pauses land while an action is in flight and wait for it.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from baton.automation.v1 import automation_pb2 as pb
from baton.automation.v1 import automation_pb2_grpc as pb_grpc
from services.automation.server import start_automation_server
from services.automation.settings import AutomationSettings
from services.runtime.grpc_client import open_channel
from services.runtime.internal_auth import InternalToken
from tests.automation.support import page_server, private_xvfb

PRESS = pb.Step(press=pb.PressAction(key="a"))


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(round(fraction * (len(ordered) - 1)), len(ordered) - 1)]


def row(label: str, samples_s: list[float], aborted: int) -> str:
    ms = [s * 1000 for s in samples_s]
    return (
        f"{label:<28} {len(ms):>4} {statistics.median(ms):>8.2f} {percentile(ms, 0.99):>8.2f} "
        f"{min(ms):>8.2f} {max(ms):>8.2f} {aborted:>8}"
    )


async def measure(
    stub: pb_grpc.AutomationServiceAsyncStub,
    request: pb.StartTaskRequest,
    samples: int,
    random_moment: bool,
) -> tuple[list[float], int]:
    session_id = request.session_id
    succeeded = asyncio.Queue[int]()

    async def read() -> None:
        async for event in stub.StartTask(request):
            if event.HasField("step") and event.step.status == pb.STEP_STATUS_SUCCEEDED:
                succeeded.put_nowait(event.step.index)

    reader = asyncio.ensure_future(read())
    durations: list[float] = []
    aborted = 0
    try:
        while len(durations) < samples:
            await succeeded.get()
            if random_moment:
                await asyncio.sleep(random.uniform(0, 0.02))
            began = time.perf_counter()
            answer = await stub.PauseTask(pb.PauseTaskRequest(session_id=session_id))
            durations.append(time.perf_counter() - began)
            aborted += answer.aborted_action
            while not succeeded.empty():
                succeeded.get_nowait()
            await stub.ResumeTask(pb.ResumeTaskRequest(session_id=session_id))
    finally:
        await stub.CancelTask(pb.CancelTaskRequest(session_id=session_id))
        await asyncio.gather(reader, return_exceptions=True)
    return durations, aborted


async def main(samples: int) -> None:
    with (
        private_xvfb() as display,
        page_server() as site,
        tempfile.TemporaryDirectory() as profiles,
    ):
        settings = AutomationSettings(
            internal_token=InternalToken.generate(), profile_root=Path(profiles)
        )
        running = await start_automation_server(settings)
        channel = open_channel(f"127.0.0.1:{running.port}", settings.internal_token)
        stub = pb_grpc.AutomationServiceStub(channel)
        try:
            print(
                f"PauseTask latency, {samples} samples per row, grace {settings.pause_grace_ms} ms"
            )
            header = ("n", "p50 ms", "p99 ms", "min", "max", "aborted")
            print(f"{'':<28} {header[0]:>4} " + " ".join(f"{h:>8}" for h in header[1:]))
            for label, random_moment in (
                ("right after a step", False),
                ("at a random moment", True),
            ):
                request = pb.StartTaskRequest(
                    session_id=f"bench-{random_moment}",
                    display=display,
                    url=f"{site.base_url}/events",
                    steps=[pb.Step(click=pb.ClickAction(selector="#text"))]
                    + [PRESS] * (samples * 4),
                    max_steps=samples * 5,
                )
                durations, aborted = await measure(stub, request, samples, random_moment)
                print(row(label, durations, aborted))
        finally:
            await channel.close(grace=None)
            await running.stop(grace=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    asyncio.run(main(parser.parse_args().samples))
