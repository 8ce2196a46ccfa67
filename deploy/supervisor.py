"""Keep `make run`'s services running: restart a crashed one with backoff.

Each service is a process group started by a `start` function and declared up
by a `ready` probe. Once a service has been ready, its exit is a crash: what is
left of its process group is killed at once, one line says so, and it starts
again after a delay that doubles from `first_s` up to `max_s`, back to
`first_s` once a run has lasted `stable_s` (jupyterhub/simpervisor and systemd's
`Restart=` with `RestartSec` work the same way). The other services keep
running. Stopping (Ctrl-C, SIGTERM) ends the restarting first, then stops the
processes, so nothing is started behind the stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from services.runtime.errors import Unavailable
from services.runtime.processes import stop_process_group

Start = Callable[[], Awaitable[asyncio.subprocess.Process]]
Ready = Callable[[asyncio.subprocess.Process], Awaitable[None]]


@dataclass
class Backoff:
    """Delay before the next restart: doubling, reset after a stable run."""

    first_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 60.0
    _next_s: float = field(default=0.0, init=False)

    def delay(self, uptime_s: float) -> float:
        """The wait before restarting a service that ran for `uptime_s`."""
        if self._next_s == 0.0 or uptime_s >= self.stable_s:
            self._next_s = self.first_s
        delay = self._next_s
        self._next_s = min(delay * 2, self.max_s)
        return delay


def describe_exit(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"


class SupervisedService:
    def __init__(
        self,
        name: str,
        start: Start,
        ready: Ready,
        stop_grace_s: float,
        backoff: Backoff | None = None,
        say: Callable[[str], None] = lambda line: print(line, flush=True),
    ) -> None:
        self.name = name
        self._start = start
        self._ready = ready
        self._stop_grace_s = stop_grace_s
        self._backoff = backoff or Backoff()
        self._say = say
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0

    async def start(self) -> None:
        """Start the service and wait until it is ready; Unavailable when it is not."""
        # A stop arriving mid-start still gets the process to stop.
        starting = asyncio.ensure_future(self._start())
        try:
            self.process = await asyncio.shield(starting)
        except asyncio.CancelledError:
            self.process = await starting
            raise
        try:
            await self._ready(self.process)
        except Unavailable:
            await stop_process_group(self.process, self._stop_grace_s, leader_only=True)
            raise

    async def supervise(self) -> None:
        """Restart the service whenever it exits, until cancelled."""
        started = time.monotonic()
        while True:
            assert self.process is not None
            await self.process.wait()
            # Whatever the crashed leader left in its group (the Playwright
            # driver, ...) goes at once; its successor reaps the rest.
            await stop_process_group(self.process, 0)
            delay = self._backoff.delay(time.monotonic() - started)
            self._say(
                f"baton: {self.name} {describe_exit(self.process.returncode)}; "
                f"restarting in {delay:g} s"
            )
            await asyncio.sleep(delay)
            started = time.monotonic()
            try:
                await self.start()
            except Unavailable as exc:
                self._say(f"baton: {self.name} did not come back: {exc.message}")
                continue
            self.restarts += 1
            self._say(f"baton: {self.name} restarted (pid {self.process.pid})")

    async def stop(self) -> None:
        if self.process is not None:
            await stop_process_group(self.process, self._stop_grace_s, leader_only=True)


async def supervise_all(services: list[SupervisedService], until: Awaitable[object]) -> None:
    """Restart crashed services until `until` completes, then stop restarting."""
    watchers = [asyncio.create_task(s.supervise(), name=f"supervise-{s.name}") for s in services]
    try:
        await until
    finally:
        for watcher in watchers:
            watcher.cancel()
        for watcher in watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
