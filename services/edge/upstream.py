"""The edge's RFB connection to a slot's websockify: dialled, authenticated, initialised.

A viewer with control gets one of its own (stream_proxy.py); the watchers of a
session share one per feed (stream_feed.py). A wss:// upstream (a worker host's
stream endpoint with TLS, services/display/README.md, "Network") must present a
certificate the edge's stream CA signed. The slot's VNC password stays here.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from services.display.rfb_client import RfbClient, RfbError, ServerInit, WebSocketChannel
from services.edge.log_redaction import UPSTREAM_LOGGER, redact_tokens

log = logging.getLogger(__name__)

SUBPROTOCOL = "binary"
UPSTREAM_CONNECT_TIMEOUT_S = 10.0


class UpstreamError(Exception):
    """The display could not be reached or refused the edge; the message is for the viewer."""


@dataclass(frozen=True)
class Upstream:
    connection: ClientConnection
    init: ServerInit
    # What the display sent right behind its ServerInit.
    buffered: bytes


def upstream_ssl(ca_file: str | None) -> ssl.SSLContext:
    """How the edge verifies wss:// upstreams: `ca_file`, or the system's CAs."""
    return ssl.create_default_context(cafile=ca_file)


def _set_nodelay(connection: ClientConnection) -> None:
    sock = connection.transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def open_upstream(
    session_id: str, url: str, password: str, tls: ssl.SSLContext | None
) -> Upstream:
    """Connect and run the RFB handshake as a shared client; UpstreamError if it fails."""
    try:
        connection = await connect(
            url,
            ssl=tls if url.startswith("wss:") else None,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            compression=None,
            max_size=None,
            proxy=None,
            ping_interval=None,
            open_timeout=UPSTREAM_CONNECT_TIMEOUT_S,
            # Filtered: never a frame logged (log_redaction.py).
            logger=logging.getLogger(UPSTREAM_LOGGER),
        )
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        log.warning("session %s: upstream %s unreachable: %s", session_id, redact_tokens(url), exc)
        raise UpstreamError("the display is unreachable") from exc
    _set_nodelay(connection)
    client = RfbClient(WebSocketChannel(connection))
    try:
        init = await asyncio.wait_for(
            client.handshake(shared=True, password=password), UPSTREAM_CONNECT_TIMEOUT_S
        )
    except (RfbError, TimeoutError) as exc:
        log.warning("session %s: RFB handshake with the display failed: %s", session_id, exc)
        await connection.close()
        raise UpstreamError("the display refused the connection") from exc
    except BaseException:
        await connection.close()
        raise
    return Upstream(connection, init, client.take_buffered())
