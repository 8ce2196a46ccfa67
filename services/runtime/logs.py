"""Process-wide logging set-up, one format for every service."""

from __future__ import annotations

import logging

# OpenTelemetry's gRPC server instrumentation attaches a streaming RPC's span in the
# context that starts the stream and detaches it where the stream's generator is
# closed; when a client cancels the stream (or the service stops), that is another
# context, and OpenTelemetry logs the ValueError with its traceback, at ERROR
# (open-telemetry/opentelemetry-python-contrib#2357). The span is still ended.
OTEL_CONTEXT_LOGGER = "opentelemetry.context"
DETACH_FAILED = "Failed to detach context"


class CrossContextDetach(logging.Filter):
    """Drops exactly that record: the message, and a ValueError of a token reset in
    another context; any other error of that logger is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (
            record.getMessage() == DETACH_FAILED
            and isinstance(error, ValueError)
            and "was created in a different Context" in str(error)
        )


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    otel = logging.getLogger(OTEL_CONTEXT_LOGGER)
    if not any(isinstance(f, CrossContextDetach) for f in otel.filters):
        otel.addFilter(CrossContextDetach())
