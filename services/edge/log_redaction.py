"""Keep credentials in URLs out of the logs.

Stream URLs carry their token in the query (browsers cannot set headers on
WebSockets), and uvicorn logs every WebSocket handshake with its query string
("WebSocket /api/...?token=..." [accepted]); upstream websockify URLs carry
one too. Every log record of the edge's server passes through
`TokenRedactingFilter`, which replaces each token value with `[redacted]`.
"""

from __future__ import annotations

import logging
import re

_TOKEN_PARAMETER = re.compile(r"((?:^|[?&;\s\"'])(?:token|access_token)=)[^&;\s\"']*", re.I)
REDACTED = "[redacted]"
# uvicorn's loggers: "uvicorn.error" logs WebSocket handshakes, "uvicorn.access"
# HTTP requests (when its access log is on).
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


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


def redact_server_logs() -> None:
    """Install the filter on uvicorn's loggers (once, however often called)."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, TokenRedactingFilter) for existing in logger.filters):
            logger.addFilter(TokenRedactingFilter())
