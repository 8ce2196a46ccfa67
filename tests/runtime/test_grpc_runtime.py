"""The shared gRPC bootstrap: error mapping and trace propagation, on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from services.runtime.errors import NotFound, ResourceExhausted
from services.runtime.grpc_client import open_channel
from services.runtime.grpc_server import RunningServer, start_server
from tests.conftest import INTERNAL_TOKEN

Context = grpc.aio.ServicerContext[Any, Any]


async def trace_id(request: bytes, context: Context) -> bytes:
    return format(trace.get_current_span().get_span_context().trace_id, "032x").encode()


async def missing(request: bytes, context: Context) -> bytes:
    raise NotFound("no such thing")


async def crash(request: bytes, context: Context) -> bytes:
    raise RuntimeError("database password is hunter2")


async def full_stream(request: bytes, context: Context) -> AsyncIterator[bytes]:
    yield b"one"
    raise ResourceExhausted("host is full")


def register(server: grpc.aio.Server) -> None:
    handler = grpc.method_handlers_generic_handler(
        "test.Probe",
        {
            "TraceId": grpc.unary_unary_rpc_method_handler(trace_id),
            "Missing": grpc.unary_unary_rpc_method_handler(missing),
            "Crash": grpc.unary_unary_rpc_method_handler(crash),
            "FullStream": grpc.unary_stream_rpc_method_handler(full_stream),
        },
    )
    server.add_generic_rpc_handlers((handler,))


@pytest.fixture
async def probe() -> AsyncIterator[tuple[RunningServer, grpc.aio.Channel]]:
    running = await start_server(register, ["test.Probe"], "127.0.0.1:0", INTERNAL_TOKEN)
    channel = open_channel(f"127.0.0.1:{running.port}", INTERNAL_TOKEN)
    yield running, channel
    await channel.close(None)
    await running.stop(grace=1)


async def test_trace_context_crosses_the_call(
    probe: tuple[RunningServer, grpc.aio.Channel],
) -> None:
    _, channel = probe
    parent = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    call = channel.unary_unary("/test.Probe/TraceId", None, None)
    with trace.use_span(NonRecordingSpan(parent)):
        seen = await call(b"")
    assert seen == b"4bf92f3577b34da6a3ce929d0e0e4736"


async def test_errors_map_to_codes_and_internals_stay_private(
    probe: tuple[RunningServer, grpc.aio.Channel],
) -> None:
    _, channel = probe
    with pytest.raises(grpc.aio.AioRpcError) as not_found:
        await channel.unary_unary("/test.Probe/Missing", None, None)(b"")
    assert (not_found.value.code(), not_found.value.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "no such thing",
    )
    with pytest.raises(grpc.aio.AioRpcError) as internal:
        await channel.unary_unary("/test.Probe/Crash", None, None)(b"")
    assert (internal.value.code(), internal.value.details()) == (
        grpc.StatusCode.INTERNAL,
        "internal error",
    )
    assert "hunter2" not in (internal.value.debug_error_string() or "")


async def test_stream_errors_map_too(probe: tuple[RunningServer, grpc.aio.Channel]) -> None:
    _, channel = probe
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as full:
        async for message in channel.unary_stream("/test.Probe/FullStream", None, None)(b""):
            received.append(message)
    assert received == [b"one"]
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
