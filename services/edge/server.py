"""Run the edge app under uvicorn in the current event loop.

`start_edge_server` binds the socket itself (port 0 picks a free one, as tests
do), starts uvicorn on it and returns once it accepts connections. Signals are
left to the caller (`__main__` stops the server on SIGTERM/SIGINT), so the
edge shuts down like every other Baton service.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from dataclasses import dataclass

import uvicorn

from services.edge.app import EdgeApp, build_edge_app
from services.edge.auth import Authenticator
from services.edge.log_redaction import redact_server_logs
from services.edge.rfb_filter import MAX_CUT_TEXT
from services.edge.session_client import SessionClient
from services.edge.settings import EdgeSettings

GRACEFUL_SHUTDOWN_S = 3
# The largest WebSocket message a client may send. The biggest legitimate one
# is a viewer's clipboard (ClientCutText, capped by the RFB filter); uvicorn's
# default (16 MiB, with 32 queued per connection) lets one viewer pin 512 MiB.
WS_MAX_MESSAGE_BYTES = 2 * MAX_CUT_TEXT


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None]:
        # The embedding program owns signal handling.
        yield


@dataclass
class RunningEdge:
    app: EdgeApp
    sessions: SessionClient
    host: str
    port: int
    tls: bool
    _server: _EmbeddedServer
    _task: asyncio.Task[None]

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    async def stop(self) -> None:
        self._server.should_exit = True
        try:
            await self._task
        finally:
            await self.app.close()
            await self.sessions.close()


def bind_listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets
    # that say they are TCP. Without it, a response written in two parts (head,
    # then body) waits for the client's delayed ACK: 40 ms per request on a
    # kept-alive connection.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


async def start_edge_server(settings: EdgeSettings, auth: Authenticator) -> RunningEdge:
    """Serve the edge on settings.host:settings.port until `stop()`."""
    # uvicorn logs each WebSocket handshake with its query string: the token.
    redact_server_logs()
    sessions = SessionClient(settings.session_address, settings.internal_token, settings.grpc_tls)
    app = build_edge_app(settings, sessions, auth)
    config = uvicorn.Config(
        app.asgi,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="off",
        # RFB frames are mostly compressed already; deflate only costs latency.
        ws_per_message_deflate=False,
        # The client address is the socket's peer, never a header a client can
        # write (X-Forwarded-For): the audit trail's source (README "Audit trail").
        proxy_headers=False,
        ws_max_size=WS_MAX_MESSAGE_BYTES,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        ssl_certfile=settings.tls_certfile,
        ssl_keyfile=settings.tls_keyfile,
    )
    server = _EmbeddedServer(config)
    sock = bind_listener(settings.host, settings.port)
    port: int = sock.getsockname()[1]
    task = asyncio.create_task(server.serve(sockets=[sock]), name="edge-uvicorn")
    while not server.started:
        if task.done():
            sock.close()
            await app.close()
            await sessions.close()
            task.result()
            raise RuntimeError("the edge server stopped while starting")
        await asyncio.sleep(0.01)
    return RunningEdge(
        app=app,
        sessions=sessions,
        host=settings.host,
        port=port,
        tls=settings.tls,
        _server=server,
        _task=task,
    )
