"""Service-to-service authentication: one per-deployment credential on every gRPC call.

Every Baton gRPC server refuses a call that does not carry
`authorization: Bearer <BATON_INTERNAL_TOKEN>` with UNAUTHENTICATED before the
servicer runs; only `grpc.health.v1.Health` stays open, because orchestrators'
probes carry no credential. Reflection needs the credential like any other call
(README.md, "Calling the services with grpcurl"). Every channel made by
`services.runtime.grpc_client.open_channel` attaches it.

The session API trusts the `actor` of a request only because only holders of
this credential can call it: the edge is the one place that turns a user into an
actor (issue 12, finding 1).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from services.runtime.settings import ConfigError, Env

ENV_NAME = "BATON_INTERNAL_TOKEN"
MIN_BYTES = 32
METADATA_KEY = "authorization"
# Health checks are probes from orchestrators and launchers: no credential.
OPEN_SERVICE_PREFIX = "/grpc.health.v1.Health/"


@dataclass(frozen=True)
class InternalToken:
    """The deployment's shared secret; never printed (repr hides it)."""

    value: str = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.value.encode()) < MIN_BYTES:
            raise ConfigError(f"{ENV_NAME} must be at least {MIN_BYTES} bytes")

    @classmethod
    def from_env(cls, env: Env) -> InternalToken:
        value = env.optional(ENV_NAME)
        if value is None:
            raise ConfigError(
                f"{ENV_NAME} is not set: every Baton service needs the deployment's "
                f"internal credential (at least {MIN_BYTES} bytes; `make run` generates one)"
            )
        return cls(value)

    @classmethod
    def generate(cls) -> InternalToken:
        return cls(secrets.token_urlsafe(MIN_BYTES))

    @property
    def header(self) -> str:
        return f"Bearer {self.value}"

    def admits(self, metadata: Any) -> bool:
        """Whether call metadata carries this credential (constant-time compare)."""
        for key, value in metadata or ():
            if key == METADATA_KEY:
                given = value.encode() if isinstance(value, str) else bytes(value)
                return hmac.compare_digest(given, self.header.encode())
        return False


async def _refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(
        grpc.StatusCode.UNAUTHENTICATED, f"missing or wrong internal credential ({ENV_NAME})"
    )


def _refusing(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same kind as `handler` that only refuses."""
    kinds = (
        (handler.unary_unary, grpc.unary_unary_rpc_method_handler),
        (handler.unary_stream, grpc.unary_stream_rpc_method_handler),
        (handler.stream_unary, grpc.stream_unary_rpc_method_handler),
        (handler.stream_stream, grpc.stream_stream_rpc_method_handler),
    )
    make = next(make for behavior, make in kinds if behavior is not None)
    return make(
        _refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class InternalAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses every call but health checks without the internal credential."""

    def __init__(self, token: InternalToken) -> None:
        self._token = token

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_SERVICE_PREFIX):
            return handler
        if self._token.admits(handler_call_details.invocation_metadata):
            return handler
        return _refusing(handler)


class _AttachToken:
    def __init__(self, token: InternalToken) -> None:
        self._token = token

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(METADATA_KEY, self._token.header)
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
        )


class _UnaryUnary(_AttachToken, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStream(_AttachToken, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnary(_AttachToken, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_unary(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(details), request_iterator)


class _StreamStream(_AttachToken, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_stream(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(details), request_iterator)


def token_interceptors(token: InternalToken) -> list[Any]:
    """Client interceptors that attach `token` to every kind of call."""
    return [_UnaryUnary(token), _UnaryStream(token), _StreamUnary(token), _StreamStream(token)]
