"""The session service's overall health includes its worker host.

SessionService itself is SERVING as soon as it runs; the server's overall
health (the empty service name, what `/healthz` asks) is SERVING only while the
worker host's display and automation services answer SERVING too, so "ready"
means a session can really be placed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from services.runtime.grpc_client import is_serving

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 2.0
CHECK_TIMEOUT_S = 1.0


async def workers_serving(channels: Sequence[grpc.aio.Channel]) -> bool:
    for channel in channels:
        if not await is_serving(channel, deadline_s=CHECK_TIMEOUT_S):
            return False
    return True


class WorkerHealthMonitor:
    def __init__(self, health: HealthServicer, channels: Sequence[grpc.aio.Channel]) -> None:
        self._health = health
        self._channels = channels
        self._serving: bool | None = None
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> bool:
        serving = await workers_serving(self._channels)
        if serving != self._serving:
            log.log(
                logging.INFO if serving else logging.WARNING,
                "worker host %s",
                "ready" if serving else "not reachable: sessions cannot be placed",
            )
            self._serving = serving
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
