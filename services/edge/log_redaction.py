"""Keep credentials in URLs out of the logs.

Stream URLs carry their token in the query (browsers cannot set headers on
WebSockets), and uvicorn logs every WebSocket handshake with its query string
("WebSocket /api/...?token=..." [accepted]); upstream websockify URLs carry
one too. Every log record of the edge's server passes through
`TokenRedactingFilter`, which replaces each token value with `[redacted]`.

At DEBUG, the websockets library logs every frame it sends or receives, and a
viewer's frames carry what the person types (RFB key events): `FrameDroppingFilter`
drops those records on the server's logger and on the stream proxy's upstream
connections (`UPSTREAM_LOGGER`), whatever their level.
"""

from __future__ import annotations

import logging
import re

from websockets.frames import Frame

_TOKEN_PARAMETER = re.compile(r"((?:^|[?&;\s\"'])(?:token|access_token)=)[^&;\s\"']*", re.I)
REDACTED = "[redacted]"
# uvicorn's loggers: "uvicorn.error" logs WebSocket handshakes, "uvicorn.access"
# HTTP requests (when its access log is on).
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
# The logger of the stream proxy's WebSocket connections to websockify.
UPSTREAM_LOGGER = "services.edge.upstream"


def redact_tokens(text: str) -> str:
    """`text` with the value of every token=... query parameter replaced."""
    return _TOKEN_PARAMETER.sub(lambda match: match.group(1) + REDACTED, text)


class TokenRedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_tokens(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class FrameDroppingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not any(isinstance(arg, Frame) for arg in args)


def _install(name: str, kind: type[logging.Filter]) -> None:
    logger = logging.getLogger(name)
    if not any(isinstance(existing, kind) for existing in logger.filters):
        logger.addFilter(kind())


def redact_server_logs() -> None:
    """Install the filters on uvicorn's loggers and the upstream one (once, however
    often called)."""
    for name in SERVER_LOGGERS:
        _install(name, TokenRedactingFilter)
        _install(name, FrameDroppingFilter)
    _install(UPSTREAM_LOGGER, TokenRedactingFilter)
    _install(UPSTREAM_LOGGER, FrameDroppingFilter)
