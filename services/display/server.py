"""Assembly of the display service: state dir, websockify, slot pool, gRPC server,
and, in a cluster, the host's registration and its drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, replace

import grpc

from baton.display.v1 import display_pb2, display_pb2_grpc
from services.display.process_stack import Binaries, ProcessSlotLauncher, port_held
from services.display.recording_store_s3 import ObjectRecordingStore, RecordingBucketClient
from services.display.recordings import Recordings, RecordingStore
from services.display.registration import WorkerRegistration, first_record, follow_capacity
from services.display.servicer import DisplayServicer
from services.display.settings import DisplaySettings
from services.display.slot_pool import SlotPool
from services.display.state_dir import StateDir
from services.display.websockify_router import StreamEndpoint, WebsockifyRouter
from services.display.x_display_files import display_held
from services.runtime.entrypoint import until_stop_signal
from services.runtime.grpc_server import RunningServer, start_server
from services.runtime.processes import require_module

log = logging.getLogger(__name__)

SERVICE_NAME = display_pb2.DESCRIPTOR.services_by_name["DisplayService"].full_name


@dataclass
class DisplayHost:
    """A running display service; `registration` is None without etcd."""

    settings: DisplaySettings
    running: RunningServer
    pool: SlotPool
    registration: WorkerRegistration | None

    async def serve_until_signal(self, grace: float = 5.0) -> None:
        """Serve until SIGTERM/SIGINT; drain first when registered, then stop."""
        try:
            await until_stop_signal()
            if self.registration is not None:
                await self.drain(self.registration, self.settings.drain_timeout_s)
            log.info("shutting down")
        finally:
            await self.running.stop(grace)

    async def drain(self, registration: WorkerRegistration, timeout_s: float) -> None:
        """No new slot from now on; return once the held ones are released, after
        `timeout_s`, or at a second stop signal (README.md, "Drain")."""
        self.pool.drain()
        registration.update(replace(registration.record, draining=True), urgent=True)
        log.info(
            "draining: %d slots held; stopping once they are released or in %g s",
            self.pool.capacity().held,
            timeout_s,
        )
        idle = asyncio.create_task(self.pool.wait_until_idle())
        again = asyncio.create_task(until_stop_signal())
        try:
            done, _ = await asyncio.wait(
                {idle, again}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (idle, again):
                task.cancel()
            await asyncio.gather(idle, again, return_exceptions=True)
        if idle in done:
            log.info("drained: no slot held any more")
        elif again in done:
            log.warning("a second stop signal: stopping %d held slots", self.pool.capacity().held)
        else:
            log.warning(
                "drain timeout (%g s): stopping %d held slots", timeout_s, self.pool.capacity().held
            )


async def start_display_server(
    settings: DisplaySettings, address: str = "127.0.0.1:0"
) -> RunningServer:
    """Reap what an earlier run left, start websockify, the warm pool and the server.

    Stopping the returned server also stops every slot and websockify.
    """
    return (await start_display_host(settings, address)).running


async def start_display_host(
    settings: DisplaySettings, address: str = "127.0.0.1:0"
) -> DisplayHost:
    """`start_display_server`, and the host's registration when etcd is configured."""
    binaries = Binaries.find(settings.backend)
    bucket = None
    if settings.recording_bucket is not None:
        bucket = RecordingBucketClient(settings.recording_bucket)
        # Refuses to start, in one line, without a bucket to put recordings in.
        await asyncio.to_thread(bucket.check)
    # The host's websockify is `python -m websockify` with this interpreter.
    require_module("websockify")
    state = StateDir(settings.state_dir)
    state.acquire()
    async with contextlib.AsyncExitStack() as undo:
        undo.callback(state.release)
        await state.reap(settings.stop_grace)
        router = WebsockifyRouter(
            state,
            settings.websockify_port,
            settings.ready_timeout,
            settings.stop_grace,
            StreamEndpoint(
                listen_host=settings.websockify_host,
                advertise_host=settings.stream_advertise_host,
                cert=settings.stream_tls_cert,
                key=settings.stream_tls_key,
            ),
        )
        await router.start()
        undo.push_async_callback(router.stop)
        launcher = ProcessSlotLauncher(
            settings.backend,
            binaries,
            state,
            router,
            ready_timeout=settings.ready_timeout,
            grace=settings.stop_grace,
        )
        disk = RecordingStore(
            settings.recordings_path, settings.recording_retention_s, settings.host_id
        )
        disk.open()
        object_store = ObjectRecordingStore(disk, bucket) if bucket is not None else None
        recordings: Recordings = object_store or disk
        sweeper = asyncio.create_task(recordings.run())
        undo.push_async_callback(_cancel, sweeper)
        pool = SlotPool(
            settings,
            launcher,
            display_held=display_held,
            port_held=port_held,
            recordings=recordings,
        )
        pool.start()
        undo.push_async_callback(pool.close)
        servicer = DisplayServicer(pool, settings.backend, settings.host_id)

        def register(server: grpc.aio.Server) -> None:
            display_pb2_grpc.add_DisplayServiceServicer_to_server(servicer, server)

        running = await start_server(
            register, [SERVICE_NAME], address, settings.internal_token, settings.grpc_tls
        )
        # Started: from here on the server's stop hooks own the clean-up.
        undo.pop_all()

    async def release_state() -> None:
        state.release()

    registration = None
    if settings.etcd_endpoints:
        record = first_record(settings, running.port, router.port, pool.capacity())
        registration = WorkerRegistration(
            settings.etcd_endpoints, record, settings.worker_lease_ttl_s
        )
        registration.start()
        follower = asyncio.create_task(follow_capacity(pool, registration))

        async def unregister() -> None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            await registration.close()

        # The record goes first: nothing is placed on a host that is stopping.
        running.on_stop.append(unregister)

    async def stop_sweeper() -> None:
        await _cancel(sweeper)
        if object_store is not None:
            # The slots are stopped: what they recorded goes up now if it can.
            await object_store.close()

    running.on_stop.extend([pool.close, stop_sweeper, router.stop, release_state])
    log.info(
        "display service on port %d: backend %s, %d slots max, %d warm, websockify port %d",
        running.port,
        settings.backend.value,
        settings.max_slots,
        settings.warm_slots,
        router.port,
    )
    return DisplayHost(settings, running, pool, registration)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
