"""gRPC client channels with trace propagation, shared by every caller."""

from __future__ import annotations

import grpc

from services.runtime.telemetry import client_interceptors


def open_channel(target: str) -> grpc.aio.Channel:
    """An insecure channel to a Baton service (they listen on trusted networks)."""
    return grpc.aio.insecure_channel(target, interceptors=client_interceptors())
