"""The launcher's restart policy and supervision, with a real child process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from deploy.supervisor import Backoff, SupervisedService, describe_exit, supervise_all
from services.runtime.processes import pid_alive, start_process


def test_backoff_doubles_to_a_cap_and_resets_after_a_stable_run() -> None:
    backoff = Backoff(first_s=0.5, max_s=4, stable_s=60)
    assert [backoff.delay(1) for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert backoff.delay(61) == 0.5
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(3) == "exited with status 3"


async def test_a_killed_child_is_restarted_and_stopping_ends_it() -> None:
    said: list[str] = []

    async def start() -> asyncio.subprocess.Process:
        return await start_process([sys.executable, "-c", "import time; time.sleep(60)"])

    async def ready(process: asyncio.subprocess.Process) -> None:
        return None

    service = SupervisedService("sleeper", start, ready, 5, Backoff(first_s=0.05), said.append)
    await service.start()
    assert service.process is not None
    first = service.process.pid
    stop = asyncio.Event()
    supervising = asyncio.create_task(supervise_all([service], stop.wait()))
    os.kill(first, signal.SIGKILL)
    for _ in range(200):
        if service.restarts:
            break
        await asyncio.sleep(0.02)
    assert said[0] == "baton: sleeper was killed by SIGKILL; restarting in 0.05 s"
    assert said[1].startswith("baton: sleeper restarted (pid ")
    second = service.process.pid
    assert second != first and pid_alive(second)
    stop.set()
    await supervising
    await service.stop()
    assert not pid_alive(second)
