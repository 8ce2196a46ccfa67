"""The host's one websockify: each slot is a token file naming its VNC port.

websockify's TokenFileName plugin reads `tokens/<token>` on every new
connection, so adding or removing a slot is writing or deleting a file; the
process itself starts once. See README.md for why one per host, and its
"Network" section for where it listens, the URL it hands out and its TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import sys
import time
from dataclasses import dataclass

from services.display.display_argv import websockify_argv
from services.display.proc_info import identify
from services.display.state_dir import ProcessRecord, StateDir
from services.runtime.errors import Unavailable
from services.runtime.processes import start_process, stop_process_group

log = logging.getLogger(__name__)


def pick_free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_for_tcp(
    port: int, deadline: float, process: asyncio.subprocess.Process, host: str = "127.0.0.1"
) -> None:
    """Until host:port accepts, or raise Unavailable if `process` dies or time runs out."""
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if process.returncode is not None:
                raise Unavailable(f"exited with status {process.returncode}") from None
            if time.monotonic() > deadline:
                raise Unavailable(f"nothing listens on {host}:{port}") from None
            await asyncio.sleep(0.01)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


def url_host(host: str) -> str:
    """`host` as it goes in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(frozen=True)
class StreamEndpoint:
    """Where the host's websockify listens, the host edges dial, and its TLS."""

    listen_host: str = "127.0.0.1"
    # Empty: the listen host.
    advertise_host: str = ""
    cert: str | None = None
    key: str | None = None

    @property
    def tls(self) -> bool:
        return self.cert is not None and self.key is not None

    @property
    def scheme(self) -> str:
        return "wss" if self.tls else "ws"

    @property
    def local_host(self) -> str:
        """Where this host reaches its own websockify (readiness probes)."""
        if self.listen_host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if self.listen_host == "::":
            return "::1"
        return self.listen_host

    def probe_ssl(self) -> ssl.SSLContext | None:
        """TLS for this host's probes of its own websockify: encrypted, not
        verified. The probe talks to its own child process; what it checks is
        the RFB handshake with the slot's password, not who serves it."""
        if not self.tls:
            return None
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context


class WebsockifyRouter:
    def __init__(
        self,
        state: StateDir,
        port: int,
        ready_timeout: float,
        grace: float,
        endpoint: StreamEndpoint = StreamEndpoint(),
    ) -> None:
        self._state = state
        self._endpoint = endpoint
        self._port = port or pick_free_port(endpoint.local_host)
        self._ready_timeout = ready_timeout
        self._grace = grace
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def port(self) -> int:
        return self._port

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def endpoint(self) -> StreamEndpoint:
        return self._endpoint

    def url_for(self, token: str) -> str:
        """The slot's URL as edges dial it (through the session service)."""
        endpoint = self._endpoint
        host = url_host(endpoint.advertise_host or endpoint.listen_host)
        return f"{endpoint.scheme}://{host}:{self._port}/websockify?token={token}"

    def local_url_for(self, token: str) -> str:
        """The slot's URL as this host reaches it itself."""
        endpoint = self._endpoint
        host = url_host(endpoint.local_host)
        return f"{endpoint.scheme}://{host}:{self._port}/websockify?token={token}"

    def add_route(self, token: str, vnc_port: int) -> None:
        self._state.write_token(token, vnc_port)

    def remove_route(self, token: str) -> None:
        self._state.remove_token(token)

    async def start(self) -> None:
        await self._launch()
        self._supervisor = asyncio.create_task(self._supervise(), name="websockify-supervisor")

    async def _launch(self) -> None:
        endpoint = self._endpoint
        argv = websockify_argv(
            sys.executable,
            self._port,
            self._state.token_dir,
            endpoint.listen_host,
            endpoint.cert,
            endpoint.key,
        )
        self._state.write_websockify_record(ProcessRecord(processes=[], pending=[argv]))
        log_file = (self._state.path / "websockify.log").open("ab")
        try:
            process = await start_process(argv, stdout=log_file.fileno(), stderr=log_file.fileno())
        finally:
            log_file.close()
        self._process = process
        try:
            await wait_for_tcp(
                self._port, time.monotonic() + self._ready_timeout, process, endpoint.local_host
            )
        except Unavailable as exc:
            await stop_process_group(process, self._grace)
            raise Unavailable(
                f"websockify on {endpoint.listen_host}:{self._port} did not start: {exc}"
            ) from exc
        # Listening, so past its exec: /proc now shows its real command line.
        identity = identify(process.pid)
        if identity is not None:
            self._state.write_websockify_record(ProcessRecord(processes=[identity]))
        log.info(
            "websockify listening on %s:%d (%s, pid %d)",
            endpoint.listen_host,
            self._port,
            "TLS only" if endpoint.tls else "plaintext",
            process.pid,
        )

    async def _supervise(self) -> None:
        # A dead websockify would leave every slot unreachable: start it again
        # on the same port; the slots and their tokens stay as they are.
        delay = 0.5
        while not self._closing:
            assert self._process is not None
            status = await self._process.wait()
            if self._closing:
                return
            log.error("websockify exited with status %s; restarting it", status)
            # Its per-connection children share its process group: end them too.
            await stop_process_group(self._process, 0)
            try:
                await self._launch()
                delay = 0.5
            except Unavailable:
                log.exception("websockify restart failed; retrying in %.1f s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def stop(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._process is not None:
            await stop_process_group(self._process, self._grace)
        self._state.remove_websockify_record()
