"""The one server interceptor that maps domain errors to gRPC statuses."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc

from services.runtime.errors import RETRY_AFTER_KEY, BatonError, ResourceExhausted

log = logging.getLogger(__name__)

_UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
_StreamBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


async def _abort_for(
    exc: Exception, method: str, context: grpc.aio.ServicerContext[Any, Any]
) -> None:
    if isinstance(exc, ResourceExhausted):
        retry = ((RETRY_AFTER_KEY, str(exc.retry_after_s)),)
        await context.abort(exc.grpc_code, exc.message, trailing_metadata=retry)
    if isinstance(exc, BatonError):
        await context.abort(exc.grpc_code, exc.message)
    # Unknown failures: the traceback goes to the log, never on the wire.
    log.exception("unhandled error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


def _wrap_unary(method: str, behavior: _UnaryBehavior) -> _UnaryBehavior:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort_for(exc, method, context)

    return handle


def _wrap_stream(method: str, behavior: _StreamBehavior) -> _StreamBehavior:
    if not inspect.isasyncgenfunction(behavior):
        # A coroutine that writes its messages with context.write().
        return cast(_StreamBehavior, _wrap_unary(method, cast(_UnaryBehavior, behavior)))

    async def handle(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            async for item in behavior(request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort_for(exc, method, context)

    return handle


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """BatonError → its status code and message; anything else → INTERNAL."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, cast(_UnaryBehavior, handler.unary_unary)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(method, cast(_StreamBehavior, handler.unary_stream)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            # The request is the iterator of the client's messages.
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(method, cast(_StreamBehavior, handler.stream_stream)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
