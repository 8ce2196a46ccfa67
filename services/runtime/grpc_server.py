"""gRPC server bootstrap shared by every service.

`start_server` builds a grpc.aio server with health, reflection, the internal
credential check (services/runtime/internal_auth.py), the trace context
interceptor and the error-mapping interceptor, binds it (port 0 picks a
free port, as tests do; TLS when the settings carry a certificate,
services/runtime/grpc_tls.py) and starts it. `serve_until_signal` runs it until
SIGTERM or SIGINT and shuts down gracefully: health turns NOT_SERVING first.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from services.runtime.entrypoint import until_stop_signal
from services.runtime.grpc_tls import PLAINTEXT, GrpcTls
from services.runtime.interceptors import ErrorMappingInterceptor
from services.runtime.internal_auth import InternalAuthInterceptor, InternalToken
from services.runtime.telemetry import server_interceptors

log = logging.getLogger(__name__)

Registrar = Callable[[grpc.aio.Server], None]


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: HealthServicer
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def stop(self, grace: float = 5.0) -> None:
        """Turn health NOT_SERVING, finish in-flight calls, then run on_stop."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        for hook in self.on_stop:
            await hook()


async def start_server(
    register: Registrar,
    service_names: Sequence[str],
    address: str,
    token: InternalToken,
    tls: GrpcTls = PLAINTEXT,
) -> RunningServer:
    """Start a server on `address` ("127.0.0.1:0" picks a free port) that refuses
    every call but health checks without `token`; TLS only when `tls` has a
    certificate."""
    # The credential check is outermost: an unauthenticated call runs nothing else.
    server = grpc.aio.server(
        interceptors=[
            InternalAuthInterceptor(token),
            *server_interceptors(),
            ErrorMappingInterceptor(),
        ]
    )
    register(server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            *service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    credentials = tls.server_credentials()
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot bind gRPC server to {address}")
    await server.start()
    for name in ["", *service_names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving %s on port %d (%s)",
        ", ".join(service_names),
        port,
        ("mutual TLS" if tls.mutual else "TLS") if tls.serves_tls else "plaintext",
    )
    return RunningServer(server=server, port=port, health=health_servicer)


async def serve_until_signal(running: RunningServer, grace: float = 5.0) -> None:
    """Block until SIGTERM/SIGINT, then stop `running` gracefully."""
    try:
        await until_stop_signal()
        log.info("shutting down")
    finally:
        await running.stop(grace)
