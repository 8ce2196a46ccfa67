"""The session service's overall health includes its worker host.

SessionService itself is SERVING as soon as it runs; the server's overall
health (the empty service name, what `/healthz` asks) is SERVING only while the
worker host's display and automation services answer SERVING too, so "ready"
means a session can really be placed.

A busy worker host answers a health check late now and then; one late answer
is not an outage. `HealthVerdict` turns probe results into the reported
status: a host that was serving is reported down only after
`MISSES_BEFORE_NOT_SERVING` consecutive failed probes (about 10 s), and back up
at its first good one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2

from services.runtime.grpc_client import is_serving

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 2.0
# Generous: under load a healthy worker may take well over a second to answer.
CHECK_TIMEOUT_S = 3.0
MISSES_BEFORE_NOT_SERVING = 3

Probe = Callable[[], Awaitable[bool]]


class HealthSetter(Protocol):
    """The part of grpc_health's HealthServicer the monitor uses."""

    async def set(
        self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None: ...


async def workers_serving(channels: Sequence[grpc.aio.Channel]) -> bool:
    for channel in channels:
        if not await is_serving(channel, deadline_s=CHECK_TIMEOUT_S):
            return False
    return True


class HealthVerdict:
    """Probe results in, the status to report out (pure: no I/O, no clock)."""

    def __init__(self, misses_allowed: int = MISSES_BEFORE_NOT_SERVING - 1) -> None:
        self._misses_allowed = misses_allowed
        self._serving: bool | None = None
        self._misses = 0

    @property
    def serving(self) -> bool | None:
        return self._serving

    def observe(self, probe_ok: bool) -> bool:
        """Record one probe; return whether the host is to be reported serving."""
        if probe_ok:
            self._misses = 0
            self._serving = True
        else:
            self._misses += 1
            # Never serving yet: nothing to keep reporting, down at once.
            if self._serving is None or self._misses > self._misses_allowed:
                self._serving = False
        return self._serving


class WorkerHealthMonitor:
    def __init__(
        self,
        health: HealthSetter,
        channels: Sequence[grpc.aio.Channel],
        probe: Probe | None = None,
        verdict: HealthVerdict | None = None,
    ) -> None:
        self._health = health
        self._probe = probe or (lambda: workers_serving(channels))
        self._verdict = verdict or HealthVerdict()
        self._reported: bool | None = None
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> bool:
        serving = self._verdict.observe(await self._probe())
        if serving != self._reported:
            log.log(
                logging.INFO if serving else logging.WARNING,
                "worker host %s",
                "ready" if serving else "not reachable: sessions cannot be placed",
            )
            self._reported = serving
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if serving
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            await self._health.set("", status)
        return serving

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="worker-health")

    async def _run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(CHECK_INTERVAL_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
