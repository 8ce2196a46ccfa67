"""gRPC client channels with trace propagation, and the health probe, shared by
every caller."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.grpc_tls import PLAINTEXT, GrpcTls
from services.runtime.internal_auth import InternalToken, token_interceptors
from services.runtime.telemetry import client_interceptors

# Baton's services are on one host or a private network: after a service
# restarts, reconnect within a second or two rather than gRPC's default backoff
# of up to two minutes.
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def open_channel(target: str, token: InternalToken, tls: GrpcTls = PLAINTEXT) -> grpc.aio.Channel:
    """A channel to a Baton service that sends the deployment's internal credential
    on every call (services/runtime/internal_auth.py). Plaintext unless `tls`
    names a CA (services/runtime/grpc_tls.py): then the server must prove it is
    Baton's before anything, the credential included, is sent."""
    # The credential goes in an interceptor, not call credentials: grpc refuses
    # call credentials on plaintext channels, and plaintext stays the default.
    interceptors = [*client_interceptors(), *token_interceptors(token)]
    credentials = tls.channel_credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(
            target, options=RECONNECT_OPTIONS, interceptors=interceptors
        )
    return grpc.aio.secure_channel(
        target, credentials, options=RECONNECT_OPTIONS, interceptors=interceptors
    )


async def is_serving(channel: grpc.aio.Channel, service: str = "", deadline_s: float = 1.0) -> bool:
    """Whether the server answers its health check for `service` with SERVING."""
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=deadline_s
        )
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
