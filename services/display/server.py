"""Assembly of the display service: state dir, websockify, slot pool, gRPC server."""

from __future__ import annotations

import contextlib
import logging

import grpc

from baton.display.v1 import display_pb2, display_pb2_grpc
from services.display.process_stack import Binaries, ProcessSlotLauncher, port_held
from services.display.servicer import DisplayServicer
from services.display.settings import DisplaySettings
from services.display.slot_pool import SlotPool
from services.display.state_dir import StateDir
from services.display.websockify_router import StreamEndpoint, WebsockifyRouter
from services.display.x_display_files import display_held
from services.runtime.grpc_server import RunningServer, start_server
from services.runtime.processes import require_module

log = logging.getLogger(__name__)

SERVICE_NAME = display_pb2.DESCRIPTOR.services_by_name["DisplayService"].full_name


async def start_display_server(
    settings: DisplaySettings, address: str = "127.0.0.1:0"
) -> RunningServer:
    """Reap what an earlier run left, start websockify, the warm pool and the server.

    Stopping the returned server also stops every slot and websockify.
    """
    binaries = Binaries.find(settings.backend)
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
        pool = SlotPool(settings, launcher, display_held=display_held, port_held=port_held)
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

    running.on_stop.extend([pool.close, router.stop, release_state])
    log.info(
        "display service on port %d: backend %s, %d slots max, %d warm, websockify port %d",
        running.port,
        settings.backend.value,
        settings.max_slots,
        settings.warm_slots,
        router.port,
    )
    return running
