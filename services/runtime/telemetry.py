"""OpenTelemetry set-up: trace context always propagates, export is opt-in.

The exporter is chosen the standard way, by OTEL_TRACES_EXPORTER ("none" by
default, "console" or "otlp"; the OTLP exporter reads its own OTEL_EXPORTER_OTLP_*
variables). The gRPC instrumentation's interceptors carry trace context across
every call whether or not anything is exported.
"""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import (
    aio_client_interceptors,
    aio_server_interceptor,
    filters,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

from services.runtime.errors import InvalidArgument


def _exporter(name: str) -> SpanExporter | None:
    if name in ("", "none"):
        return None
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    raise InvalidArgument(f"OTEL_TRACES_EXPORTER={name!r}: expected none, console or otlp")


def configure_telemetry(service_name: str, traces_exporter: str) -> TracerProvider | None:
    """Install a tracer provider when an exporter is asked for; return it."""
    exporter = _exporter(traces_exporter)
    if exporter is None:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


# Health and reflection are not traced: they are probes, not work, and the
# instrumentation cannot wrap Health.Watch (a handler that writes with
# context.write rather than yielding).
_UNTRACED = filters.negate(
    filters.any_of(
        filters.service_name("grpc.health.v1.Health"),
        filters.service_prefix("grpc.reflection."),
    )
)


def server_interceptors() -> list[grpc.aio.ServerInterceptor[Any, Any]]:
    interceptor: grpc.aio.ServerInterceptor[Any, Any] = aio_server_interceptor(filter_=_UNTRACED)  # type: ignore[no-untyped-call]
    return [interceptor]


def client_interceptors() -> list[Any]:
    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]
