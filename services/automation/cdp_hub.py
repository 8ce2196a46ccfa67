"""The CDP hub: Playwright and external CDP clients share each browser's one pipe.

Chromium speaks CDP over the debugging pipe its parent hands it (fds 3 and 4,
NUL-terminated JSON), and only there: no TCP port, which any local process could
drive (README.md, "Isolation"). Playwright starts `browser-pipe.py` as the browser;
it trades Playwright's pipe ends for those of a `BrowserPipe` here, over this
hub's unix socket (mode 0700, ours only), then execs Chromium.

A BrowserPipe forwards Playwright's messages as they are. An external client
(`attach`) gets a browser session of its own (`Target.attachToBrowserTarget`), so
its auto-attach, its domains and its targets' sessions are its own, not
Playwright's: it sees that session as the root (no `sessionId`), its ids are mapped
into a range Playwright never reaches, and answers and events go back to whoever
owns their id or session. With no external client, nothing from Chromium is parsed.
Gating by control is the caller's (cdp_gate.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.automation.profile_reaper import HUB_PREFIX, OWNER_FILE, owner_stamp

log = logging.getLogger(__name__)

PIPE_PROGRAM = Path(__file__).with_name("browser-pipe.py")
SOCKET_ENV = "BATON_CDP_SOCKET"
TOKEN_ENV = "BATON_CDP_TOKEN"
NEXT_ENV = "BATON_BROWSER_NEXT"
# External clients' command ids start here: Chromium takes int32 ids, and
# Playwright counts its own from 1.
EXTERNAL_ID_BASE = 1_500_000_000
# A client's answer for a session it does not own (Chromium's own wording).
NO_SESSION = -32001

Message = dict[str, Any]


class _Frames(asyncio.Protocol):
    """NUL-terminated messages from a pipe, whole, to `on_message`; `on_end` at EOF."""

    def __init__(self, on_message: Callable[[bytes], None], on_end: Callable[[], None]) -> None:
        self._on_message = on_message
        self._on_end = on_end
        # The message being read, in pieces (a screenshot is megabytes: no re-copying).
        self._parts: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        if b"\0" not in data:
            self._parts.append(data)
            return
        pieces = data.split(b"\0")
        self._parts.append(pieces[0])
        self._on_message(b"".join(self._parts))
        for message in pieces[1:-1]:
            self._on_message(message)
        self._parts = [pieces[-1]] if pieces[-1] else []

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_end()


class CdpClient:
    """One external client's view of the browser: `send` a command, `receive`
    what is addressed to it (answers and events, as Chromium wrote them)."""

    def __init__(self, pipe: BrowserPipe, root: str) -> None:
        self._pipe = pipe
        self.root = root
        self.sessions = {root}
        self._inbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self._answers: dict[int, asyncio.Future[Message]] = {}
        self.closed = False

    def send(self, message: Message) -> asyncio.Future[Message]:
        """Send one command (its own `id`); the answer, also delivered to `receive`."""
        return self._pipe._send_for(self, message)

    async def receive(self) -> Message | None:
        """The next message for this client; None once the browser is gone or we closed."""
        return await self._inbox.get()

    def _deliver(self, message: Message) -> None:
        if message.get("sessionId") == self.root:
            message.pop("sessionId")
        self._inbox.put_nowait(message)

    def _end(self) -> None:
        if not self.closed:
            self.closed = True
            self._inbox.put_nowait(None)
            for answer in self._answers.values():
                if not answer.done():
                    answer.cancel()

    def close(self) -> None:
        """Detach its sessions; what it created (pages) stays."""
        if not self.closed:
            self._pipe._detach(self)


class BrowserPipe:
    """Between Playwright's pipe and Chromium's, for one browser."""

    def __init__(self) -> None:
        self._to_browser: asyncio.WriteTransport | None = None
        self._to_playwright: asyncio.WriteTransport | None = None
        self._from_playwright_pipe: asyncio.ReadTransport | None = None
        self._ids = itertools.count(EXTERNAL_ID_BASE)
        # External command id -> (its client, the client's own id), or None: ours.
        self._pending: dict[int, tuple[CdpClient, int] | None] = {}
        self._owners: dict[str, CdpClient] = {}
        self._clients: set[CdpClient] = set()
        self._hub_answers: dict[int, asyncio.Future[Message]] = {}
        # Sessions of clients that have gone, until their detaches are answered.
        self._retired: set[str] = set()
        self.gone = asyncio.Event()

    async def connect(
        self, playwright_in: int, playwright_out: int, browser_in: int, browser_out: int
    ) -> None:
        """Relay between the fds: Playwright's commands (read) and answers (write),
        Chromium's commands (write) and answers (read)."""
        loop = asyncio.get_running_loop()
        self._to_browser, _ = await loop.connect_write_pipe(
            asyncio.Protocol, os.fdopen(browser_in, "wb", 0)
        )
        self._to_playwright, _ = await loop.connect_write_pipe(
            asyncio.Protocol, os.fdopen(playwright_out, "wb", 0)
        )
        await loop.connect_read_pipe(
            lambda: _Frames(self._from_browser, self._browser_ended),
            os.fdopen(browser_out, "rb", 0),
        )
        self._from_playwright_pipe, _ = await loop.connect_read_pipe(
            lambda: _Frames(self._from_playwright, self._playwright_ended),
            os.fdopen(playwright_in, "rb", 0),
        )

    # Playwright's side: forwarded whole, unread.
    def _from_playwright(self, raw: bytes) -> None:
        if self._to_browser is not None and not self._to_browser.is_closing():
            self._to_browser.write(raw + b"\0")

    def _playwright_ended(self) -> None:
        # Chromium exits when its pipe closes, as it did when Playwright held it.
        if self._to_browser is not None:
            self._to_browser.close()

    def _browser_ended(self) -> None:
        # Playwright sees both its pipe ends close, as when Chromium held them.
        if self._to_playwright is not None:
            self._to_playwright.close()
        if self._from_playwright_pipe is not None:
            self._from_playwright_pipe.close()
        for client in list(self._clients):
            client._end()
        self._clients.clear()
        for answer in self._hub_answers.values():
            if not answer.done():
                answer.cancel()
        self.gone.set()

    def _to_playwright_raw(self, raw: bytes) -> None:
        if self._to_playwright is not None and not self._to_playwright.is_closing():
            self._to_playwright.write(raw + b"\0")

    def _from_browser(self, raw: bytes) -> None:
        if not (self._clients or self._pending or self._hub_answers):
            # Nothing of anyone else's can come: Playwright's, unread.
            self._retired.clear()
            self._to_playwright_raw(raw)
            return
        message: Message = json.loads(raw)
        command_id = message.get("id")
        if command_id is not None:
            if command_id < EXTERNAL_ID_BASE:
                self._to_playwright_raw(raw)
            else:
                self._answer(command_id, message)
            return
        session = message.get("sessionId", "")
        client = self._owners.get(session)
        if client is None:
            # Playwright's, unless of a client that has gone (Playwright fails
            # on what it does not know).
            if session not in self._retired:
                self._to_playwright_raw(raw)
            return
        params = message.get("params") or {}
        if message.get("method") == "Target.attachedToTarget":
            self._own(client, params.get("sessionId"))
        elif message.get("method") == "Target.detachedFromTarget":
            self._disown(params.get("sessionId"))
        client._deliver(message)

    def _answer(self, command_id: int, message: Message) -> None:
        hub_answer = self._hub_answers.pop(command_id, None)
        if hub_answer is not None:
            if not hub_answer.done():
                hub_answer.set_result(message)
            return
        owner = self._pending.pop(command_id, None)
        if owner is None:
            return
        client, own_id = owner
        result = message.get("result")
        if isinstance(result, dict) and isinstance(result.get("sessionId"), str):
            self._own(client, result["sessionId"])
        message["id"] = own_id
        answer = client._answers.pop(command_id, None)
        if answer is not None and not answer.done():
            answer.set_result(message)
        if not client.closed:
            client._deliver(message)

    def _own(self, client: CdpClient, session_id: object) -> None:
        if isinstance(session_id, str) and not client.closed:
            self._owners[session_id] = client
            client.sessions.add(session_id)

    def _disown(self, session_id: object) -> None:
        if isinstance(session_id, str):
            client = self._owners.pop(session_id, None)
            if client is not None:
                client.sessions.discard(session_id)

    def _write(self, message: Message) -> None:
        if self._to_browser is None or self._to_browser.is_closing():
            raise ConnectionError("the browser is gone")
        self._to_browser.write(json.dumps(message).encode() + b"\0")

    async def _call(
        self, method: str, params: Message | None = None, session: str | None = None
    ) -> Message:
        """A command of the hub's own; its answer."""
        command_id = next(self._ids)
        answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._hub_answers[command_id] = answer
        message: Message = {"id": command_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        try:
            self._write(message)
        except ConnectionError:
            self._hub_answers.pop(command_id, None)
            raise
        return await answer

    async def attach(self) -> CdpClient:
        """A new external client, on a browser session of its own."""
        if self.gone.is_set():
            raise ConnectionError("the browser is gone")
        answer = await self._call("Target.attachToBrowserTarget")
        root = (answer.get("result") or {}).get("sessionId")
        if not isinstance(root, str):
            raise ConnectionError(f"the browser refused a CDP session: {answer.get('error')}")
        client = CdpClient(self, root)
        self._clients.add(client)
        self._owners[root] = client
        return client

    def _send_for(self, client: CdpClient, message: Message) -> asyncio.Future[Message]:
        answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        own_id = message.get("id")
        session = message.get("sessionId", client.root)
        if session not in client.sessions or client.closed:
            error = {"code": NO_SESSION, "message": "Session with given id not found."}
            refusal: Message = {"id": own_id, "error": error}
            if "sessionId" in message:
                refusal["sessionId"] = message["sessionId"]
            answer.set_result(refusal)
            if not client.closed:
                client._deliver(dict(refusal))
            return answer
        command_id = next(self._ids)
        self._pending[command_id] = (client, own_id)  # type: ignore[assignment]
        client._answers[command_id] = answer
        try:
            self._write({**message, "id": command_id, "sessionId": session})
        except ConnectionError:
            self._pending.pop(command_id, None)
            client._answers.pop(command_id, None)
            answer.cancel()
        return answer

    def _detach(self, client: CdpClient) -> None:
        self._clients.discard(client)
        for session in [*sorted(client.sessions - {client.root}), client.root]:
            self._owners.pop(session, None)
            self._retired.add(session)
            with contextlib.suppress(ConnectionError):
                command_id = next(self._ids)
                self._pending[command_id] = None
                self._write(
                    {
                        "id": command_id,
                        "method": "Target.detachFromTarget",
                        "params": {"sessionId": session},
                    }
                )
        client._end()


class CdpHub:
    """The unix socket browser-pipe.py reaches us on; one BrowserPipe per launch."""

    def __init__(self) -> None:
        # Ours: removed at our stop, or by our successor after a crash (profile_reaper.py).
        self._dir = Path(tempfile.mkdtemp(prefix=HUB_PREFIX))
        (self._dir / OWNER_FILE).write_text(owner_stamp())
        self.path = self._dir / "hub.sock"
        self._listener: socket.socket | None = None
        self._waiting: dict[str, asyncio.Future[BrowserPipe]] = {}
        self._trades: set[asyncio.Future[None]] = set()

    def start(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept)

    def expect(self) -> tuple[str, asyncio.Future[BrowserPipe]]:
        """A launch's token (for browser-pipe.py's environment) and its pipe, once connected."""
        token = secrets.token_hex(16)
        future: asyncio.Future[BrowserPipe] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        return token, future

    def forget(self, token: str) -> None:
        self._waiting.pop(token, None)

    def environment(self, token: str, next_program: str) -> dict[str, str]:
        return {SOCKET_ENV: str(self.path), TOKEN_ENV: token, NEXT_ENV: next_program}

    def _accept(self) -> None:
        assert self._listener is not None
        with contextlib.suppress(BlockingIOError):
            connection, _ = self._listener.accept()
            trade = asyncio.ensure_future(self._trade(connection))
            self._trades.add(trade)
            trade.add_done_callback(self._trades.discard)

    async def _trade(self, connection: socket.socket) -> None:
        received: list[int] = []
        try:
            # browser-pipe.py sends its token and fds in one message, then waits.
            connection.settimeout(5)
            data, received, _flags, _address = await asyncio.to_thread(
                socket.recv_fds, connection, 64, 2, socket.MSG_CMSG_CLOEXEC
            )
            future = self._waiting.pop(data.decode(errors="replace"), None)
            if future is None or future.done() or len(received) != 2:
                connection.sendall(b"unknown launch")
                return
            # Chromium reads commands from the first pipe, writes answers to the second.
            commands_read, commands_write = os.pipe()
            answers_read, answers_write = os.pipe()
            socket.send_fds(connection, [b"ok"], [commands_read, answers_write])
            os.close(commands_read)
            os.close(answers_write)
            pipe = BrowserPipe()
            await pipe.connect(received[0], received[1], commands_write, answers_read)
            received = []
            future.set_result(pipe)
        except OSError as error:
            log.warning("a browser's pipe trade failed: %s", error)
        finally:
            for fd in received:
                os.close(fd)
            connection.close()

    def stop(self) -> None:
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        shutil.rmtree(self._dir, ignore_errors=True)
