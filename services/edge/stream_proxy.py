"""The stream WebSocket: a viewer's RFB connection, proxied to the slot.

A browser connects with the short-lived stream token in the URL (browsers
cannot set headers on WebSockets). The edge asks the session service where the
slot's websockify is, connects to it with the `binary` subprotocol and copies
bytes both ways. The edge terminates the RFB handshake on both sides
(viewer_handshake.py): the viewer sees security type None, the edge
authenticates upstream with the slot's VNC password (VncAuth) and passes the
ServerInit on. A wss:// upstream (a worker host's stream endpoint with TLS,
services/display/README.md, "Network") must present a certificate the edge's
stream CA signed; a viewer that does not finish its handshake within
VIEWER_HANDSHAKE_TIMEOUT_S is closed, having never reached the display. What
the viewer sends after that goes through `ClientStreamFilter`, whose
input gate follows the session's WatchSession events: input reaches the display
only while the session is USER_CONTROL and this viewer's user is the
controller, and the switch happens on the open connection.

A watch-only stream (a token asked for with `?watch=true`, or a view share's) has
no upstream of its own: it is served from the session's feed on this edge
(stream_feed.py, docs/stream.md "Watch-only streams"), and its gate never opens.

Before accepting, the handshake's Origin must be one the edge serves
(`OriginPolicy`) and the stream token is spent (`redeem_stream_token`): a
foreign page or a second use of a URL gets HTTP 403.

Close codes follow websockify: 1000 when the upstream or the session closes,
1011 when the upstream cannot be reached, 1008 for a refused token (and when
the JWT the stream URL was asked with expires), 1002 for a malformed RFB
message (that connection only), 1013 when the session has no display yet. A
user over the rate limit or with too many open viewers gets the handshake
refused with HTTP 429 and Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from baton.session.v1 import session_pb2
from services.edge.auth import WATCH_USE, Authenticator, Principal
from services.edge.input_tally import InputTally
from services.edge.json_views import error_json
from services.edge.metrics import EdgeMetrics
from services.edge.origins import OriginPolicy
from services.edge.rate_limit import RateLimiter
from services.edge.rfb_filter import ClientStreamFilter, RfbProtocolError
from services.edge.session_client import SessionClient
from services.edge.shares import revoked
from services.edge.stream_feed import FeedKey, SessionFeeds, Watcher, WatcherSetup
from services.edge.upstream import SUBPROTOCOL, Upstream, UpstreamError, open_upstream
from services.edge.viewer_handshake import serve_viewer_handshake
from services.edge.watch_hub import Event, SessionWatchHub, event_kind, session_of
from services.runtime.errors import BatonError, NotFound, ResourceExhausted, Unauthenticated

log = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013

# A viewer gets this long to finish its RFB handshake with the edge; a stalled
# one is closed (1008) and affects nobody else (issue 12, finding 6).
VIEWER_HANDSHAKE_TIMEOUT_S = 5.0
# User input keeps a session from idling out, and a takeover's idleSeconds
# auto-return counts from it (services/session/auto_return.py): told once a second.
INPUT_ACTIVITY_INTERVAL_S = 1.0
# While a viewer stays connected, the session service hears so this often; it
# lets viewer counts lapse without it (BATON_VIEWER_LEASE_S, 90 s by default),
# so viewers of an edge that died stop keeping sessions alive.
VIEWER_PRESENT_INTERVAL_S = 30.0
_TERMINAL = (session_pb2.CONTROL_STATE_ENDED, session_pb2.CONTROL_STATE_FAILED)
# Retry-After when a user has too many viewers open: one must close first.
VIEWER_LIMIT_RETRY_AFTER_S = 10
# Longest wait for the session service to take a connection's audit event.
AUDIT_REPORT_TIMEOUT_S = 2.0


async def _refuse(websocket: WebSocket, error: ResourceExhausted) -> None:
    """Refuse the handshake with HTTP 429 where the server can (uvicorn does)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        headers = {"Retry-After": str(error.retry_after_s)}
        await websocket.send_denial_response(
            JSONResponse(error_json(error), status_code=429, headers=headers)
        )
        return
    await websocket.close(CLOSE_TRY_AGAIN_LATER, error.message[:120])


def may_send_input(session: session_pb2.Session, user_id: str) -> bool:
    """The server-side rule: only the controlling user, only in USER_CONTROL."""
    return (
        session.state == session_pb2.CONTROL_STATE_USER_CONTROL
        and session.controller == session_pb2.CONTROLLER_USER
        and session.controller_user_id == user_id
    )


class InputGate:
    """Whether one viewer's input may pass, kept current from session events."""

    def __init__(self, user_id: str, never: bool = False) -> None:
        # Closed until a session says otherwise; `never` for a watch-only stream.
        self._never = never
        self._user_id = user_id
        self._version = -1
        self._open = False

    def __call__(self) -> bool:
        return self._open

    def update(self, session: session_pb2.Session) -> bool:
        """Apply a newer session; True when the gate just closed."""
        if session.version < self._version:
            return False
        self._version = session.version
        was_open = self._open
        self._open = not self._never and may_send_input(session, self._user_id)
        return was_open and not self._open


class StreamProxy:
    def __init__(
        self,
        sessions: SessionClient,
        auth: Authenticator,
        hub: SessionWatchHub,
        metrics: EdgeMetrics,
        origins: OriginPolicy,
        limiter: RateLimiter,
        max_viewers_per_user: int,
        upstream_tls: ssl.SSLContext | None = None,
    ) -> None:
        self._upstream_tls = upstream_tls
        self._sessions = sessions
        self._auth = auth
        self._hub = hub
        self._metrics = metrics
        self._origins = origins
        self._limiter = limiter
        self._max_viewers_per_user = max_viewers_per_user
        self._viewers: dict[str, set[_ViewerConnection]] = {}
        # Watch-only viewers' shared upstreams (stream_feed.py).
        self._feeds = SessionFeeds(metrics)
        # Open stream connections per user on this edge.
        self._per_user: Counter[str] = Counter()
        # Per session with viewers here: the feed listener that acknowledges
        # control changes to the session service's handoff fence.
        self._fence_listeners: dict[str, Callable[[], None]] = {}
        self._acknowledging: set[asyncio.Task[None]] = set()

    async def session_changed(self, session: session_pb2.Session) -> None:
        """Apply a change made through this edge to its viewers at once.

        The WatchSession feed brings the same change a moment later; applying
        it here first means input works as soon as take_control has answered.
        """
        for viewer in list(self._viewers.get(session.id, ())):
            await viewer.apply(session)

    async def handle(self, websocket: WebSocket) -> None:
        session_id = websocket.path_params["session_id"]
        origin = websocket.headers.get("origin")
        if not self._origins.allows(origin, websocket.url.scheme, websocket.headers.get("host")):
            log.warning("session %s: stream refused for origin %r", session_id, origin)
            await websocket.close(CLOSE_POLICY_VIOLATION, "origin not allowed")
            return
        try:
            use, principal = self._auth.redeem_viewer_token(
                websocket.query_params.get("token", ""), session_id
            )
            principal = principal.at(websocket.client)
        except Unauthenticated as exc:
            # Before accept: the browser sees the handshake refused (HTTP 403).
            await websocket.close(CLOSE_POLICY_VIOLATION, exc.message)
            return
        try:
            self._limiter.check(principal)
            self._check_viewers(principal)
        except ResourceExhausted as exc:
            await _refuse(websocket, exc)
            return
        self._per_user[principal.user_id] += 1
        try:
            await self._handle(websocket, session_id, principal, watch=use == WATCH_USE)
        finally:
            self._per_user[principal.user_id] -= 1
            if not self._per_user[principal.user_id]:
                del self._per_user[principal.user_id]

    def _check_viewers(self, principal: Principal) -> None:
        open_now = self._per_user[principal.user_id]
        if not principal.operator and open_now >= self._max_viewers_per_user:
            raise ResourceExhausted(
                f"user {principal.user_id} has {open_now} stream connections open, the most "
                f"allowed (BATON_MAX_VIEWERS_PER_USER={self._max_viewers_per_user})",
                retry_after_s=VIEWER_LIMIT_RETRY_AFTER_S,
            )

    async def _handle(
        self, websocket: WebSocket, session_id: str, principal: Principal, watch: bool
    ) -> None:
        connection = _ViewerConnection(
            session_id, principal, websocket, self._sessions, self._metrics, watch
        )
        # Listen before asking for access, so no change falls in between; the
        # gate keeps whichever session version is newest.
        unsubscribe = self._hub.subscribe(session_id, connection.on_event)
        viewers = self._viewers.get(session_id)
        if viewers is None:
            viewers = self._viewers[session_id] = set()
            self._fence_listeners[session_id] = self._hub.subscribe(
                session_id, functools.partial(self._close_gates_and_acknowledge, session_id)
            )
        viewers.add(connection)
        try:
            await self._serve(websocket, principal, connection)
        finally:
            unsubscribe()
            viewers.discard(connection)
            if not viewers and self._viewers.get(session_id) is viewers:
                del self._viewers[session_id]
                self._fence_listeners.pop(session_id)()

    async def _close_gates_and_acknowledge(
        self, session_id: str, event: Event, initial: bool
    ) -> None:
        """The edge's half of the handoff fence (services/edge/README.md): every
        gate of the session here applies the version first, then it is acknowledged."""
        if not (initial or event_kind(event) == "control_changed"):
            return
        session = session_of(event)
        for viewer in list(self._viewers.get(session_id, ())):
            await viewer.apply(session)
        # Not awaited here: the feed's other listeners need not wait for the call.
        task = asyncio.create_task(self._acknowledge(session_id, session.version))
        self._acknowledging.add(task)
        task.add_done_callback(self._acknowledging.discard)

    async def _acknowledge(self, session_id: str, version: int) -> None:
        try:
            await self._sessions.acknowledge_control(session_id, version)
        except BatonError as exc:
            log.debug("session %s: control change not acknowledged: %s", session_id, exc)

    async def _serve(
        self, websocket: WebSocket, principal: Principal, connection: _ViewerConnection
    ) -> None:
        session_id = connection.session_id
        try:
            access = await self._sessions.stream_access(principal, session_id, holds_gate=True)
        except NotFound as exc:
            await websocket.close(CLOSE_POLICY_VIOLATION, exc.message)
            return
        except BatonError as exc:
            await websocket.close(CLOSE_INTERNAL_ERROR, exc.message)
            return
        await connection.apply(access.session)
        offered = websocket.scope.get("subprotocols", [])
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        if access.session.state in _TERMINAL:
            await websocket.close(CLOSE_NORMAL, "the session has ended")
            return
        if not access.upstream_url:
            await websocket.close(CLOSE_TRY_AGAIN_LATER, "the session has no display yet")
            return
        try:
            pending = await asyncio.wait_for(
                serve_viewer_handshake(connection.receive_bytes, websocket.send_bytes),
                VIEWER_HANDSHAKE_TIMEOUT_S,
            )
        except TimeoutError:
            log.info("session %s: a viewer did not finish its RFB handshake", session_id)
            await _close(websocket, CLOSE_POLICY_VIOLATION, "RFB handshake timed out")
            return
        except RfbProtocolError as exc:
            await _close(websocket, CLOSE_PROTOCOL_ERROR, f"RFB protocol error: {exc}"[:120])
            return
        except (WebSocketDisconnect, _ViewerGone):
            return

        def dial() -> Awaitable[Upstream]:
            return open_upstream(
                session_id, access.upstream_url, access.upstream_password, self._upstream_tls
            )

        if connection.watch:
            await self._watch(websocket, principal, connection, pending, dial)
            return
        try:
            upstream = await dial()
        except UpstreamError as exc:
            await _close(websocket, CLOSE_INTERNAL_ERROR, str(exc))
            return
        try:
            await websocket.send_bytes(upstream.init.raw + upstream.buffered)
        except WebSocketDisconnect:
            await upstream.connection.close()
            return
        try:
            await self._run(principal, connection, connection.direct(upstream.connection, pending))
        finally:
            await upstream.connection.close()

    async def _watch(
        self,
        websocket: WebSocket,
        principal: Principal,
        connection: _ViewerConnection,
        pending: bytes,
        dial: Callable[[], Awaitable[Upstream]],
    ) -> None:
        """A watch-only viewer, served from the session's feed (stream_feed.py)."""
        session_id = connection.session_id
        spare: Upstream | None = None
        watcher = Watcher(websocket.send_bytes)
        try:
            init, spare = await self._feeds.server_init(session_id, dial)
            await websocket.send_bytes(init)
            setup = WatcherSetup(init[4:20])
            await asyncio.wait_for(
                connection.read_setup(setup, pending), VIEWER_HANDSHAKE_TIMEOUT_S
            )
            # `join` owns the spare from here: a feed's upstream, or closed.
            joining, spare = self._feeds.join(session_id, setup.key, watcher, dial, spare), None
            await joining
        except UpstreamError as exc:
            await _close(websocket, CLOSE_INTERNAL_ERROR, str(exc))
            return
        except ConnectionClosed:
            await _close(websocket, CLOSE_INTERNAL_ERROR, "the display closed the connection")
            return
        except TimeoutError:
            await _close(websocket, CLOSE_POLICY_VIOLATION, "no FramebufferUpdateRequest in time")
            return
        except RfbProtocolError as exc:
            await _close(websocket, CLOSE_PROTOCOL_ERROR, f"RFB protocol error: {exc}"[:120])
            return
        except (WebSocketDisconnect, _ViewerGone):
            return
        finally:
            if spare is not None:
                await spare.connection.close()

        async def move(key: FeedKey) -> None:
            await self._feeds.join(session_id, key, watcher, dial)

        try:
            await self._run(principal, connection, connection.watching(watcher, setup, move))
        finally:
            if watcher.feed is not None:
                watcher.feed.remove(watcher)

    async def _run(
        self,
        principal: Principal,
        connection: _ViewerConnection,
        pumps: list[Coroutine[Any, Any, tuple[int, str]]],
    ) -> None:
        session_id = connection.session_id
        self._metrics.stream_connections += 1
        # Reported beside the stream, not before it: the viewer's first frame
        # does not wait for the session service's write (bench/README.md,
        # "Second round": about 10 ms of a viewer's join). Awaited before
        # stream_closed, so the trail keeps the two in order.
        detail = {"watch": "true"} if connection.watch else {}
        opened = asyncio.create_task(
            report_audit(self._sessions, principal, session_id, "stream_opened", detail)
        )
        try:
            await connection.run(pumps)
        finally:
            self._metrics.stream_connections -= 1
            await opened
            # The input this connection sent, counted, never its content: input
            # is attributed to the person whose connection sent it.
            counts = {
                "inputForwarded": connection.input_forwarded,
                "inputDropped": connection.input_dropped,
            }
            await report_audit(self._sessions, principal, session_id, "stream_closed", counts)


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    """Close the viewer's WebSocket, unless it has gone already."""
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.close(code, reason)


async def report_audit(
    sessions: SessionClient,
    principal: Principal,
    session_id: str,
    kind: str,
    detail: Mapping[str, int | str],
) -> None:
    """Report a connection to the audit trail (README "Audit trail"), waiting at
    most AUDIT_REPORT_TIMEOUT_S; a report that fails is logged, the connection stands."""
    try:
        await asyncio.wait_for(
            sessions.record_audit(principal, session_id, kind, detail), AUDIT_REPORT_TIMEOUT_S
        )
    except (BatonError, TimeoutError) as exc:
        log.warning("session %s: audit event %s not recorded: %s", session_id, kind, exc)


class _ViewerGone(Exception):
    """The viewer went away during its handshake."""


class _Closing(Exception):
    """The viewer's connection ends: with this close code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _ViewerConnection:
    def __init__(
        self,
        session_id: str,
        principal: Principal,
        websocket: WebSocket,
        sessions: SessionClient,
        metrics: EdgeMetrics,
        watch: bool = False,
    ) -> None:
        self.session_id = session_id
        self.watch = watch
        self._credential_expiry = principal.expires_at
        self._share = principal.share
        self._websocket = websocket
        self._upstream: ClientConnection | None = None
        self._sessions = sessions
        self._metrics = metrics
        # A watch-only stream's gate never opens.
        self._gate = InputGate(principal.user_id, never=watch)
        # The edge runs the viewer's handshake itself (viewer_handshake.py).
        self._filter = ClientStreamFilter(self._gate, after_handshake=True)
        self._ended = asyncio.Event()
        self._revoked = asyncio.Event()
        self._input = InputTally(INPUT_ACTIVITY_INTERVAL_S)
        self._input_report: asyncio.TimerHandle | None = None
        # This connection's input messages, forwarded or dropped by its gate.
        self.input_forwarded = 0
        self.input_dropped = 0
        self._background: set[asyncio.Task[None]] = set()

    async def on_event(self, event: Event, initial: bool) -> None:
        await self.apply(session_of(event))
        if event_kind(event) == "ended":
            self._ended.set()
        if revoked(event, self._share):
            self._revoked.set()

    async def apply(self, session: session_pb2.Session) -> None:
        if self._gate.update(session) and self._upstream is not None:
            # Let go of held keys and buttons right away, not at the next frame.
            release = self._filter.release_held_input()
            if release:
                with contextlib.suppress(ConnectionClosed):
                    await self._upstream.send(release)

    async def receive_bytes(self) -> bytes:
        """The viewer's next binary message (during the handshake)."""
        message = await self._websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise _ViewerGone
        data = message.get("bytes")
        if data is None:
            raise RfbProtocolError("binary frames only")
        return bytes(data)

    def direct(
        self, upstream: ClientConnection, pending: bytes
    ) -> list[Coroutine[Any, Any, tuple[int, str]]]:
        """The pumps of a connection of its own to the display."""
        self._upstream = upstream
        return [self._client_to_upstream(upstream, pending), self._upstream_to_client(upstream)]

    def watching(
        self, watcher: Watcher, setup: WatcherSetup, move: Callable[[FeedKey], Awaitable[None]]
    ) -> list[Coroutine[Any, Any, tuple[int, str]]]:
        """The pumps of a watcher: the feed's messages out, its own only read."""
        return [self._watcher_messages(setup, move), watcher.pump()]

    async def read_setup(self, setup: WatcherSetup, pending: bytes) -> None:
        """A watcher's messages up to its first FramebufferUpdateRequest."""
        data = pending
        while True:
            setup.read(self._filter_watcher(data))
            if setup.requested:
                return
            data = await self.receive_bytes()

    async def run(self, pumps: list[Coroutine[Any, Any, tuple[int, str]]]) -> None:
        self._report(session_pb2.ACTIVITY_KIND_VIEWER_JOINED)
        tasks = [
            *(asyncio.create_task(pump) for pump in pumps),
            asyncio.create_task(self._wait_for_end()),
            asyncio.create_task(self._report_presence()),
            asyncio.create_task(self._wait_for_credential_expiry()),
            asyncio.create_task(self._wait_for_revocation()),
        ]
        code, reason = CLOSE_NORMAL, ""
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            first = done.pop()
            try:
                code, reason = first.result()
            except _Closing as exc:
                code, reason = exc.code, exc.reason
            except RfbProtocolError as exc:
                log.info("session %s: closing a viewer: %s", self.session_id, exc)
                code, reason = CLOSE_PROTOCOL_ERROR, f"RFB protocol error: {exc}"[:120]
            except WebSocketDisconnect:
                code, reason = CLOSE_NORMAL, ""
            except Exception:
                log.exception("session %s: viewer connection failed", self.session_id)
                code, reason = CLOSE_INTERNAL_ERROR, "internal error"
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # A viewer that vanishes mid-keystroke must not leave the key (or
            # button) down on the display the AI and the others share.
            release = self._filter.release_held_input()
            if release and self._upstream is not None:
                with contextlib.suppress(ConnectionClosed):
                    await self._upstream.send(release)
            await _close(self._websocket, code, reason)
            # The input counted since the last report, now rather than after
            # the connection has gone.
            if self._input_report is not None:
                self._input_report.cancel()
                self._report_input()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._record(session_pb2.ACTIVITY_KIND_VIEWER_LEFT), 2.0)
            await asyncio.gather(*self._background, return_exceptions=True)

    def _filter_watcher(self, data: bytes) -> bytes:
        """A watcher's messages through its gate (never open): input counted, dropped."""
        result = self._filter.feed(data)
        self._metrics.input_dropped += result.input_dropped
        self.input_dropped += result.input_dropped
        return result.forward

    async def _watcher_messages(
        self, setup: WatcherSetup, move: Callable[[FeedKey], Awaitable[None]]
    ) -> tuple[int, str]:
        """Read a watcher until it leaves; a new format or encodings move it to
        the feed serving those."""
        while True:
            if setup.read(self._filter_watcher(await self._next_message())):
                try:
                    await move(setup.key)
                except (UpstreamError, ConnectionClosed):
                    return CLOSE_INTERNAL_ERROR, "the display is unreachable"

    async def _client_to_upstream(
        self, upstream: ClientConnection, pending: bytes
    ) -> tuple[int, str]:
        # What the viewer sent right behind its ClientInit comes first.
        data = pending
        while True:
            result = self._filter.feed(data or await self._next_message())
            self._metrics.input_forwarded += result.input_forwarded
            self._metrics.input_dropped += result.input_dropped
            self.input_forwarded += result.input_forwarded
            self.input_dropped += result.input_dropped
            if result.input_forwarded:
                self._note_input(result.keys_forwarded, result.pointer_forwarded)
            if result.forward:
                try:
                    await upstream.send(result.forward)
                except ConnectionClosed:
                    return CLOSE_NORMAL, "the display closed the connection"
            data = b""

    async def _next_message(self) -> bytes:
        """The viewer's next binary message; _Closing when it left or sent text."""
        message = await self._websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise _Closing(CLOSE_NORMAL, "")
        data = message.get("bytes")
        if data is None:
            raise _Closing(CLOSE_UNSUPPORTED_DATA, "binary frames only")
        return bytes(data)

    async def _upstream_to_client(self, upstream: ClientConnection) -> tuple[int, str]:
        try:
            async for message in upstream:
                data = message.encode() if isinstance(message, str) else message
                await self._websocket.send_bytes(data)
        except ConnectionClosed:
            pass
        return CLOSE_NORMAL, "the display closed the connection"

    async def _report_presence(self) -> tuple[int, str]:
        while True:
            await asyncio.sleep(VIEWER_PRESENT_INTERVAL_S)
            self._report(session_pb2.ACTIVITY_KIND_VIEWER_PRESENT)

    async def _wait_for_credential_expiry(self) -> tuple[int, str]:
        """A stream lives no longer than the JWT its URL was asked with."""
        if self._credential_expiry is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(max(0.0, self._credential_expiry - time.time()))
        return CLOSE_POLICY_VIOLATION, "token expired"

    async def _wait_for_revocation(self) -> tuple[int, str]:
        """A stream opened with a share's token closes when the share is revoked."""
        await self._revoked.wait()
        return CLOSE_POLICY_VIOLATION, "the share was revoked"

    async def _wait_for_end(self) -> tuple[int, str]:
        await self._ended.wait()
        return CLOSE_NORMAL, "the session ended"

    def _note_input(self, keys: int, pointer: int) -> None:
        delay = self._input.add(time.monotonic(), keys, pointer)
        if delay == 0:
            self._report_input()
        elif delay is not None:
            self._input_report = asyncio.get_running_loop().call_later(delay, self._report_input)

    def _report_input(self) -> None:
        """Report the input counted since the last report (input_tally.py)."""
        self._input_report = None
        counts = self._input.take(time.monotonic())
        if counts is not None:
            self._report(session_pb2.ACTIVITY_KIND_USER_INPUT, counts.keys, counts.pointer)

    def _report(
        self, kind: session_pb2.ActivityKind.ValueType, keys: int = 0, pointer: int = 0
    ) -> None:
        """Tell the session service about viewer activity, without waiting for it."""
        task = asyncio.create_task(self._record(kind, keys, pointer))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _record(
        self, kind: session_pb2.ActivityKind.ValueType, keys: int = 0, pointer: int = 0
    ) -> None:
        try:
            await self._sessions.record_activity(self.session_id, kind, keys, pointer)
        except BatonError as exc:
            log.debug("session %s: activity not recorded: %s", self.session_id, exc)
