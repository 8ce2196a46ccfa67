"""Socket.IO door: session events pushed to every client watching a session.

Clients authenticate on connect with `auth: {token}` (the operator token or a
user JWT). When that JWT expires, the client gets `auth:expired {error}` and is
disconnected; events it sends after the expiry are refused. Each client event
is acknowledged with `{ok: true, session}` or `{ok: false, error: {code,
message}}`. A client that creates or watches a
session joins its room; one WatchSession feed per session (shared through the
hub) fans the session's events out to the room.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

from baton.session.v1 import session_pb2
from services.edge.auth import Authenticator, Principal
from services.edge.json_views import (
    ACTION_NAMES,
    ControlRequest,
    JsonObject,
    error_json,
    session_id_of,
    session_json,
    step_event_json,
)
from services.edge.rate_limit import RateLimiter
from services.edge.session_actions import SessionActions
from services.edge.shares import revoked
from services.edge.watch_hub import Event, SessionWatchHub, event_kind
from services.runtime.errors import BatonError, InvalidArgument, Unauthenticated
from services.runtime.handback_view import handback_json

log = logging.getLogger(__name__)

# A handler gets the client (sid), who it is and the event payload.
Handler = Callable[[str, Principal, Any], Awaitable[JsonObject]]


def room_of(session_id: str) -> str:
    return f"session:{session_id}"


def event_messages(event: Event) -> list[tuple[str, JsonObject]]:
    """The Socket.IO events (name, payload) for one WatchSession event: a
    session that ended FAILED is an error first (issue 10: watchers of a lost
    host's sessions get `session:error` and `session:ended`)."""
    message = event_message(event)
    if message is None:
        return []
    ended = event.ended.session if event_kind(event) == "ended" else None
    if ended is not None and ended.state == session_pb2.CONTROL_STATE_FAILED:
        error = {"session": message[1]["session"], "message": event.ended.reason}
        return [("session:error", error), message]
    return [message]


def event_message(event: Event) -> tuple[str, JsonObject] | None:
    """The Socket.IO event name and payload for one WatchSession event."""
    kind = event_kind(event)
    if kind == "created":
        return "session:created", {"session": session_json(event.created.session)}
    if kind == "step":
        return "session:step", {
            "session": session_json(event.step.session),
            "step": step_event_json(event.step.step),
        }
    if kind == "control_changed":
        changed = event.control_changed
        returned = changed.action == session_pb2.CONTROL_ACTION_RETURN_CONTROL
        # On a return: what the person did, beside the session that also holds it
        # (docs/asyncapi.yaml); null otherwise.
        handback = changed.session.handback if changed.session.HasField("handback") else None
        payload: JsonObject = {
            "session": session_json(changed.session),
            "action": ACTION_NAMES.get(changed.action),
            "handback": handback_json(handback) if returned and handback else None,
        }
        return "session:control_changed", payload
    if kind == "control_requested":
        # Someone who may take control asks the person holding it for it.
        return "session:control_requested", {
            "session": session_json(event.control_requested.session),
            "userId": event.control_requested.user_id,
        }
    if kind == "task_changed":
        # The task's own status (completed, waiting for the user) changed; sent
        # so pages need not poll for it (docs/asyncapi.yaml).
        return "session:task_changed", {"session": session_json(event.task_changed.session)}
    if kind == "error":
        return "session:error", {
            "session": session_json(event.error.session),
            "message": event.error.message,
        }
    if kind == "ended":
        return "session:ended", {
            "session": session_json(event.ended.session),
            "reason": event.ended.reason,
        }
    return None


def _token_of(environ: dict[str, Any], auth: Any) -> str:
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return str(auth["token"])
    header = str(environ.get("HTTP_AUTHORIZATION", ""))
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    raise Unauthenticated("connect with auth {token}")


class SocketGateway:
    def __init__(
        self,
        server: socketio.AsyncServer,
        actions: SessionActions,
        auth: Authenticator,
        hub: SessionWatchHub,
        limiter: RateLimiter,
    ) -> None:
        self._limiter = limiter
        self._server = server
        self._actions = actions
        self._auth = auth
        self._hub = hub
        self._principals: dict[str, Principal] = {}
        # Per client whose token expires: the task that disconnects it then.
        self._expiries: dict[str, asyncio.Task[None]] = {}
        # Per session: the clients (sids) in its room and the feed's unsubscribe.
        self._members: dict[str, set[str]] = {}
        self._feeds: dict[str, Callable[[], None]] = {}
        server.on("connect", self._connect)
        server.on("disconnect", self._disconnect)
        handlers: dict[str, Handler] = {
            "session:create": self._create,
            "session:watch": self._watch,
            "session:control": self._control,
            "session:request_control": self._request_control,
            "session:pause": self._simple(session_pb2.CONTROL_ACTION_PAUSE),
            "session:resume": self._simple(session_pb2.CONTROL_ACTION_RESUME),
            "session:end": self._end,
        }
        for name, handler in handlers.items():
            server.on(name, self._acknowledged(handler))

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        try:
            principal = self._auth.authenticate(_token_of(environ, auth))
            # The socket's peer, for the audit trail: from the ASGI scope, as
            # engine.io's environ has REMOTE_ADDR 127.0.0.1 whoever connects.
            principal = principal.at(environ.get("asgi.scope", {}).get("client"))
        except Unauthenticated as exc:
            # The client sees `message` and `data` (as socket.io's connect_error).
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code}
            ) from None
        self._principals[sid] = principal
        if principal.expires_at is not None:
            self._expiries[sid] = asyncio.create_task(
                self._expire(sid, principal.expires_at), name=f"socketio-expiry-{sid}"
            )

    async def _expire(self, sid: str, expires_at: float) -> None:
        """A connection lives no longer than the JWT it was opened with."""
        await asyncio.sleep(max(0.0, expires_at - time.time()))
        self._expiries.pop(sid, None)
        await self._server.emit(
            "auth:expired", error_json(Unauthenticated("token expired")), to=sid
        )
        await self._server.disconnect(sid)

    async def _disconnect(self, sid: str, reason: Any = None) -> None:
        self._principals.pop(sid, None)
        expiry = self._expiries.pop(sid, None)
        if expiry is not None and expiry is not asyncio.current_task():
            expiry.cancel()
        for session_id in [sid_session for sid_session, m in self._members.items() if sid in m]:
            self._leave(sid, session_id)

    def _acknowledged(self, handler: Handler) -> Callable[[str, Any], Awaitable[JsonObject]]:
        async def handle(sid: str, payload: Any = None) -> JsonObject:
            principal = self._principals.get(sid)
            if principal is None:
                return {"ok": False, **error_json(Unauthenticated("not connected"))}
            if principal.expires_at is not None and principal.expires_at <= time.time():
                return {"ok": False, **error_json(Unauthenticated("token expired"))}
            try:
                self._limiter.check(principal)
                return {"ok": True, "session": await handler(sid, principal, payload)}
            except BatonError as exc:
                return {"ok": False, **error_json(exc)}
            except Exception:
                log.exception("Socket.IO handler failed")
                return {"ok": False, **error_json(BatonError("internal error"))}

        return handle

    async def _create(self, sid: str, principal: Principal, payload: Any) -> JsonObject:
        if not isinstance(payload, dict):
            raise InvalidArgument("payload must be an object like {task, url, maxSteps}")
        session = await self._actions.create(principal, payload)
        await self._join(sid, session["id"])
        await self._server.emit("session:created", {"session": session}, to=sid)
        return session

    async def _watch(self, sid: str, principal: Principal, payload: Any) -> JsonObject:
        session_id = session_id_of(payload)
        session = await self._actions.get(principal, session_id)
        await self._join(sid, session_id)
        return session

    async def _control(self, sid: str, principal: Principal, payload: Any) -> JsonObject:
        session_id = session_id_of(payload)
        return await self._actions.control(principal, session_id, payload)

    async def _request_control(self, sid: str, principal: Principal, payload: Any) -> JsonObject:
        return await self._actions.request_control(principal, session_id_of(payload))

    def _simple(self, action: session_pb2.ControlAction.ValueType) -> Handler:
        async def handle(sid: str, principal: Principal, payload: Any) -> JsonObject:
            request = ControlRequest(action)
            return await self._actions.apply(principal, session_id_of(payload), request)

        return handle

    async def _end(self, sid: str, principal: Principal, payload: Any) -> JsonObject:
        return await self._actions.end(principal, session_id_of(payload))

    async def _join(self, sid: str, session_id: str) -> None:
        await self._server.enter_room(sid, room_of(session_id))
        members = self._members.setdefault(session_id, set())
        members.add(sid)
        # A feed stops by itself when its session ends or disappears.
        if session_id not in self._feeds or self._hub.feed_task(session_id) is None:
            self._feeds[session_id] = self._hub.subscribe(session_id, self._relay(session_id))

    def _leave(self, sid: str, session_id: str) -> None:
        members = self._members.get(session_id, set())
        members.discard(sid)
        if not members:
            self._members.pop(session_id, None)
            unsubscribe = self._feeds.pop(session_id, None)
            if unsubscribe is not None:
                unsubscribe()

    async def _close_revoked(self, session_id: str, event: Event) -> None:
        """Disconnect the clients whose share this event revoked."""
        for sid in list(self._members.get(session_id, ())):
            principal = self._principals.get(sid)
            if principal is not None and revoked(event, principal.share):
                await self._server.emit(
                    "auth:expired", error_json(Unauthenticated("the share was revoked")), to=sid
                )
                await self._server.disconnect(sid)

    def _relay(self, session_id: str) -> Callable[[Event, bool], Awaitable[None]]:
        async def relay(event: Event, initial: bool) -> None:
            # The snapshot a feed starts with is not news: joiners got the
            # session in their acknowledgement.
            if initial:
                return
            for name, payload in event_messages(event):
                await self._server.emit(name, payload, room=room_of(session_id))
            await self._close_revoked(session_id, event)
            if event_kind(event) == "ended":
                self._members.pop(session_id, None)
                self._feeds.pop(session_id, None)

        return relay
