"""The host's one websockify: each slot is a token file naming its VNC port.

websockify's TokenFileName plugin reads `tokens/<token>` on every new
connection, so adding or removing a slot is writing or deleting a file; the
process itself starts once. See README.md for why one per host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time

from services.display.display_argv import websockify_argv
from services.display.proc_info import identify
from services.display.state_dir import ProcessRecord, StateDir
from services.runtime.errors import Unavailable
from services.runtime.processes import start_process, stop_process_group

log = logging.getLogger(__name__)


def pick_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_for_tcp(port: int, deadline: float, process: asyncio.subprocess.Process) -> None:
    """Until 127.0.0.1:port accepts, or raise Unavailable if `process` dies or time runs out."""
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if process.returncode is not None:
                raise Unavailable(f"exited with status {process.returncode}") from None
            if time.monotonic() > deadline:
                raise Unavailable(f"nothing listens on 127.0.0.1:{port}") from None
            await asyncio.sleep(0.01)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


class WebsockifyRouter:
    def __init__(self, state: StateDir, port: int, ready_timeout: float, grace: float) -> None:
        self._state = state
        self._port = port or pick_free_port()
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

    def url_for(self, token: str) -> str:
        return f"ws://127.0.0.1:{self._port}/websockify?token={token}"

    def add_route(self, token: str, vnc_port: int) -> None:
        self._state.write_token(token, vnc_port)

    def remove_route(self, token: str) -> None:
        self._state.remove_token(token)

    async def start(self) -> None:
        await self._launch()
        self._supervisor = asyncio.create_task(self._supervise(), name="websockify-supervisor")

    async def _launch(self) -> None:
        argv = websockify_argv(sys.executable, self._port, self._state.token_dir)
        self._state.write_websockify_record(ProcessRecord(processes=[], pending=[argv]))
        log_file = (self._state.path / "websockify.log").open("ab")
        try:
            process = await start_process(argv, stdout=log_file.fileno(), stderr=log_file.fileno())
        finally:
            log_file.close()
        self._process = process
        try:
            await wait_for_tcp(self._port, time.monotonic() + self._ready_timeout, process)
        except Unavailable as exc:
            await stop_process_group(process, self._grace)
            raise Unavailable(f"websockify on 127.0.0.1:{self._port} did not start: {exc}") from exc
        # Listening, so past its exec: /proc now shows its real command line.
        identity = identify(process.pid)
        if identity is not None:
            self._state.write_websockify_record(ProcessRecord(processes=[identity]))
        log.info("websockify listening on 127.0.0.1:%d (pid %d)", self._port, process.pid)

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
