"""The real slot launcher: X server and VNC server processes behind websockify.

`SlotLauncher` and `RunningSlot` are the ports the pool uses; `ProcessSlotLauncher`
runs real programs, the unit tests use an in-memory twin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from services.display.display_argv import ffmpeg_argv, x11vnc_argv, xvfb_argv, xvnc_argv
from services.display.proc_info import identify
from services.display.rfb_client import RfbError, probe
from services.display.settings import Backend
from services.display.slot import Viewport
from services.display.state_dir import ProcessRecord, StateDir
from services.display.websockify_router import WebsockifyRouter, wait_for_tcp
from services.display.x_authority import write_xauthority
from services.display.x_display_files import lock_owner, remove_display_files, socket_file
from services.runtime.errors import Unavailable
from services.runtime.processes import require_binary, start_process, stop_process_group
from services.runtime.vnc_auth import write_password_file

log = logging.getLogger(__name__)

# How long ffmpeg gets to finish its file after SIGINT before it is killed.
_RECORDER_STOP_S = 5.0


class SlotStartError(Exception):
    """A slot's programs did not come up; the message says why."""


@dataclass(frozen=True)
class SlotSpec:
    slot_id: str
    display: int
    vnc_port: int
    viewport: Viewport
    token: str
    # The VNC server's password: random per slot, never logged (not in repr).
    vnc_password: str = field(default="", repr=False)


class RunningSlot(Protocol):
    @property
    def websocket_url(self) -> str: ...

    @property
    def xauthority(self) -> str:
        """The Xauthority file with the display's cookie, for its X clients."""
        ...

    async def wait_exit(self) -> str:
        """Return, with a reason, once any of the slot's programs has exited."""
        ...

    async def start_recording(self, output: Path) -> None:
        """Grab the display into `output` until the slot stops (ffmpeg)."""
        ...

    def pause_recording(self, paused: bool) -> bool:
        """Stop grabbing (the video holds its last frame) or go on; False when
        the slot is not recorded."""
        ...

    async def stop(self) -> None:
        """Stop every program and remove every file of the slot; idempotent."""
        ...


class SlotLauncher(Protocol):
    async def launch(self, spec: SlotSpec) -> RunningSlot:
        """A slot whose RFB handshake through its WebSocket succeeded, or SlotStartError."""
        ...


@dataclass(frozen=True)
class Binaries:
    xvnc: str
    xvfb: str
    x11vnc: str
    ffmpeg: str = ""

    @classmethod
    def find(cls, backend: Backend) -> Binaries:
        """Check at start-up that the backend's programs are installed."""
        # Recording a session grabs its display (README.md, "Recording").
        ffmpeg = require_binary("ffmpeg", "ffmpeg")
        if backend is Backend.XVNC:
            xvnc = require_binary("Xvnc", "tigervnc-standalone-server")
            return cls(xvnc=xvnc, xvfb="", x11vnc="", ffmpeg=ffmpeg)
        return cls(
            xvnc="",
            xvfb=require_binary("Xvfb", "xvfb"),
            x11vnc=require_binary("x11vnc", "x11vnc"),
            ffmpeg=ffmpeg,
        )


@dataclass
class _Program:
    name: str
    argv: list[str]
    process: asyncio.subprocess.Process
    log_path: Path


def _log_tail(path: Path, limit: int = 400) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return text[-limit:]


class ProcessSlot:
    """One live slot: its programs, its token and its files."""

    def __init__(
        self,
        spec: SlotSpec,
        state: StateDir,
        router: WebsockifyRouter,
        grace: float,
        ffmpeg: str = "",
    ) -> None:
        self.spec = spec
        self._state = state
        self._router = router
        self._grace = grace
        self._ffmpeg = ffmpeg
        self.programs: list[_Program] = []
        # The slot's ffmpeg, when recorded: not among `programs`, whose exit
        # fails the slot; a recorder that dies loses the video, not the session.
        self.recorder: _Program | None = None
        self._stopping: asyncio.Task[None] | None = None

    @property
    def websocket_url(self) -> str:
        return self._router.url_for(self.spec.token)

    @property
    def password_file(self) -> Path:
        return self._state.slot_dir(self.spec.slot_id) / "vnc.passwd"

    @property
    def xauthority(self) -> str:
        return str(self._state.slot_dir(self.spec.slot_id) / "Xauthority")

    def write_credentials(self) -> None:
        """The slot's VNC password file and X cookie, both 0600 in the 0700 slot dir."""
        write_password_file(self.password_file, self.spec.vnc_password)
        write_xauthority(Path(self.xauthority), self.spec.display)

    @property
    def pids(self) -> list[int]:
        return [p.process.pid for p in self.programs]

    @property
    def x_server_pid(self) -> int | None:
        return self.programs[0].process.pid if self.programs else None

    async def start_program(self, name: str, argv: list[str]) -> _Program:
        program = await self._spawn(name, argv, {})
        self.programs.append(program)
        self._record()
        return program

    async def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str]) -> _Program:
        slot_dir = self._state.slot_dir(self.spec.slot_id)
        log_path = slot_dir / f"{name}.log"
        # HOME in the slot dir: whatever the programs write there goes with the slot.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(slot_dir)}
        self._record(pending=[argv])
        with log_path.open("ab") as log_file:
            process = await start_process(
                argv,
                env={**env, **extra_env},
                stdout=log_file.fileno(),
                stderr=log_file.fileno(),
            )
        return _Program(name, argv, process, log_path)

    async def start_recording(self, output: Path) -> None:
        argv = ffmpeg_argv(self._ffmpeg, self.spec.display, self.spec.viewport, output)
        # An X client of the display like any other: it needs the cookie.
        self.recorder = await self._spawn("ffmpeg", argv, {"XAUTHORITY": self.xauthority})
        # In the slot's record, so that a later run reaps it like the others.
        self._record()

    def pause_recording(self, paused: bool) -> bool:
        # SIGSTOP: ffmpeg grabs nothing until SIGCONT; its frames are stamped by
        # the clock, so the video's time stays the session's, its last frame held.
        if self.recorder is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            self.recorder.process.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)
        return True

    async def _stop_recorder(self) -> None:
        recorder = self.recorder
        if recorder is None:
            return
        # SIGINT: ffmpeg writes its last fragment and exits; killed past the grace.
        # A paused one goes on first, or it would not hear SIGINT.
        with contextlib.suppress(ProcessLookupError):
            recorder.process.send_signal(signal.SIGCONT)
            recorder.process.send_signal(signal.SIGINT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(recorder.process.wait(), _RECORDER_STOP_S)
        await stop_process_group(recorder.process, self._grace)
        if recorder.process.returncode not in (0, 255):
            log.warning(
                "slot %s: ffmpeg exited with status %s: %s",
                self.spec.slot_id,
                recorder.process.returncode,
                _log_tail(recorder.log_path),
            )

    def _record(self, pending: list[list[str]] | None = None) -> None:
        identities = []
        pending = list(pending or [])
        recorder = [self.recorder] if self.recorder else []
        for program in [*self.programs, *recorder]:
            identity = identify(program.process.pid)
            # Read in the middle of its exec, /proc shows an empty command line:
            # keep the argv so that a later run can still find the program.
            if identity is None or list(identity.cmdline) != program.argv:
                pending.append(program.argv)
            if identity is not None:
                identities.append(identity)
        self._state.write_slot_record(
            self.spec.slot_id,
            ProcessRecord(
                processes=identities,
                display=self.spec.display,
                x_server_pid=self.x_server_pid,
                token=self.spec.token,
                pending=pending,
            ),
        )

    def exit_reason(self) -> str | None:
        for program in self.programs:
            status = program.process.returncode
            if status is not None:
                tail = _log_tail(program.log_path)
                reason = f"{program.name} (pid {program.process.pid}) exited with status {status}"
                return f"{reason}: {tail}" if tail else reason
        return None

    async def wait_x_server(self, program: _Program, deadline: float) -> None:
        """Until the X server holds its display (lock names it, socket exists)."""
        display = self.spec.display
        while not (lock_owner(display) == program.process.pid and socket_file(display).exists()):
            if program.process.returncode is not None or time.monotonic() > deadline:
                raise SlotStartError(self.exit_reason() or f"display :{display} did not appear")
            await asyncio.sleep(0.005)

    async def wait_ready(self, deadline: float) -> None:
        """Until an RFB handshake through the slot's WebSocket succeeds."""
        vnc = self.programs[-1].process
        try:
            await wait_for_tcp(self.spec.vnc_port, deadline, vnc)
        except Unavailable as exc:
            raise SlotStartError(self.exit_reason() or f"VNC server: {exc}") from exc
        self._router.add_route(self.spec.token, self.spec.vnc_port)
        last_error = ""
        while time.monotonic() < deadline:
            reason = self.exit_reason()
            if reason:
                raise SlotStartError(reason)
            try:
                remaining = max(deadline - time.monotonic(), 0.1)
                init = await probe(
                    self._router.local_url_for(self.spec.token),
                    self.spec.vnc_password,
                    open_timeout=remaining,
                    ssl=self._router.endpoint.probe_ssl(),
                )
            except RfbError as exc:
                last_error = str(exc)
                await asyncio.sleep(0.02)
                continue
            expected = (self.spec.viewport.width, self.spec.viewport.height)
            if (init.width, init.height) != expected:
                raise SlotStartError(f"VNC screen is {init.width}x{init.height}, not {expected}")
            # Every program has long finished its exec now: record final identities.
            self._record()
            return
        raise SlotStartError(f"no RFB handshake through {self.websocket_url}: {last_error}")

    async def wait_exit(self) -> str:
        waits = [asyncio.ensure_future(p.process.wait()) for p in self.programs]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return self.exit_reason() or "a program of the slot exited"

    async def stop(self) -> None:
        # Shielded and shared: a caller cancelled half-way must not leave the
        # slot half stopped, and a second caller waits for the same work.
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        self._router.remove_route(self.spec.token)
        # The recorder first, while the display it grabs is still there.
        await self._stop_recorder()
        # The VNC server first: it is a client of the X server.
        for program in reversed(self.programs):
            await stop_process_group(program.process, self._grace)
        if self.x_server_pid is not None:
            remove_display_files(self.spec.display, self.x_server_pid)
        self._state.remove_slot(self.spec.slot_id)


class ProcessSlotLauncher:
    def __init__(
        self,
        backend: Backend,
        binaries: Binaries,
        state: StateDir,
        router: WebsockifyRouter,
        ready_timeout: float,
        grace: float,
    ) -> None:
        self._backend = backend
        self._binaries = binaries
        self._state = state
        self._router = router
        self._ready_timeout = ready_timeout
        self._grace = grace

    async def launch(self, spec: SlotSpec) -> RunningSlot:
        slot = ProcessSlot(spec, self._state, self._router, self._grace, self._binaries.ffmpeg)
        deadline = time.monotonic() + self._ready_timeout
        xauthority = Path(slot.xauthority)
        try:
            slot.write_credentials()
            if self._backend is Backend.XVNC:
                x_server = await slot.start_program(
                    "Xvnc",
                    xvnc_argv(
                        self._binaries.xvnc,
                        spec.display,
                        spec.viewport,
                        spec.vnc_port,
                        slot.password_file,
                        xauthority,
                    ),
                )
                await slot.wait_x_server(x_server, deadline)
            else:
                x_server = await slot.start_program(
                    "Xvfb",
                    xvfb_argv(self._binaries.xvfb, spec.display, spec.viewport, xauthority),
                )
                await slot.wait_x_server(x_server, deadline)
                await slot.start_program(
                    "x11vnc",
                    x11vnc_argv(
                        self._binaries.x11vnc,
                        spec.display,
                        spec.vnc_port,
                        slot.password_file,
                        xauthority,
                    ),
                )
            await slot.wait_ready(deadline)
        except BaseException:
            # Cancelled (a warm slot given up) or failed: leave nothing behind.
            await asyncio.shield(slot.stop())
            raise
        log.info(
            "slot %s ready on :%d (%s, VNC 127.0.0.1:%d)",
            spec.slot_id,
            spec.display,
            spec.viewport,
            spec.vnc_port,
        )
        return slot


def port_held(port: int) -> bool:
    """Whether something already listens on (or holds) 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False
