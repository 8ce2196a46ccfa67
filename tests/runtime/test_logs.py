"""Logging set-up: OpenTelemetry's cross-context detach error is dropped, nothing else."""

from __future__ import annotations

import contextvars
import logging

import pytest

from services.runtime.logs import DETACH_FAILED, OTEL_CONTEXT_LOGGER, configure_logging


def test_only_the_cross_context_detach_error_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging("INFO")
    otel = logging.getLogger(OTEL_CONTEXT_LOGGER)
    variable: contextvars.ContextVar[int] = contextvars.ContextVar("current_context")
    token = variable.set(1)
    with caplog.at_level(logging.INFO):
        # What OpenTelemetry does: reset a token in another context, log the error.
        try:
            contextvars.copy_context().run(variable.reset, token)
        except ValueError:
            otel.exception(DETACH_FAILED)
        try:
            raise ValueError("something else")
        except ValueError:
            otel.exception(DETACH_FAILED)
        otel.error("another error")
    # The positive markers: the logger's other errors still arrive.
    assert [
        (r.getMessage(), str(r.exc_info[1]) if r.exc_info else None) for r in caplog.records
    ] == [
        (DETACH_FAILED, "something else"),
        ("another error", None),
    ]
