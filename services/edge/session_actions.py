"""What a caller can do with sessions, shared by the REST and Socket.IO doors.

Both doors validate their input with json_views, then call these; the answers
are session JSON, and failures are BatonErrors either door maps for its wire.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from baton.automation.v1 import automation_pb2
from baton.session.v1 import session_pb2
from services.edge.auth import (
    CDP_USE,
    STREAM_USE,
    WATCH_USE,
    Authenticator,
    Principal,
    ShareScope,
)
from services.edge.json_views import (
    ACTION_NAMES,
    ControlRequest,
    JsonObject,
    parse_control,
    parse_create_session,
    session_json,
)
from services.edge.metrics import EdgeMetrics
from services.edge.session_client import SessionClient
from services.edge.shares import check_scope, parse_share, share_json, share_url
from services.edge.watch_hub import Event, SessionWatchHub, event_kind
from services.runtime.errors import PermissionDenied, ResourceExhausted
from services.runtime.slot_demand import NO_FREE_SLOT

log = logging.getLogger(__name__)

STREAM_PATH = "/api/browser-session/{id}/stream/ws"
CDP_PATH = "/api/browser-session/{id}/cdp/ws"

SessionObserver = Callable[[session_pb2.Session], Awaitable[None]]


@dataclass(frozen=True)
class StreamAnswer:
    url: str
    view_only: bool
    expires_at: float

    def json(self) -> JsonObject:
        return {
            "url": self.url,
            "viewOnly": self.view_only,
            "expiresAt": iso_moment(self.expires_at),
        }


def iso_moment(epoch_s: float) -> str:
    moment = datetime.fromtimestamp(epoch_s, tz=UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def websocket_base(http_base_url: str) -> str:
    """ws(s)://host:port for the http(s)://host:port a browser reached us at."""
    base = http_base_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://")
    if base.startswith("http://"):
        return "ws://" + base.removeprefix("http://")
    return base


class SessionActions:
    def __init__(
        self,
        sessions: SessionClient,
        auth: Authenticator,
        hub: SessionWatchHub,
        metrics: EdgeMetrics,
        stream_token_lifetime_s: float,
    ) -> None:
        self._sessions = sessions
        self._auth = auth
        self._hub = hub
        self._metrics = metrics
        self._stream_token_lifetime_s = stream_token_lifetime_s
        # Told of every control change made here (the stream's input gates).
        self.observers: list[SessionObserver] = []

    async def create(self, principal: Principal, body: JsonObject) -> JsonObject:
        check_scope(principal, None)
        request = parse_create_session(body)
        try:
            session = await self._sessions.create(principal, request)
        except ResourceExhausted as exc:
            # Demand the fleet could not serve: part of the autoscaling signal.
            if exc.message.startswith(NO_FREE_SLOT):
                self._metrics.refused_for_capacity(time.monotonic())
            raise
        self._observe_steps(session.id)
        return session_json(session)

    async def get(self, principal: Principal, session_id: str) -> JsonObject:
        """The session with its steps (the other answers are summaries)."""
        check_scope(principal, session_id)
        return session_json(await self._sessions.get(principal, session_id), with_steps=True)

    async def list(
        self, principal: Principal, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[JsonObject], str]:
        """One page of the caller's sessions and the next page's token ("" at the end)."""
        check_scope(principal, None)
        sessions, next_token = await self._sessions.list_page(principal, page_size, page_token)
        return [session_json(session) for session in sessions], next_token

    async def control(self, principal: Principal, session_id: str, body: JsonObject) -> JsonObject:
        return await self.apply(principal, session_id, parse_control(body))

    async def apply(
        self, principal: Principal, session_id: str, request: ControlRequest
    ) -> JsonObject:
        check_scope(principal, session_id)
        if request.action == session_pb2.CONTROL_ACTION_END:
            return await self.end(principal, session_id)
        session = await self._sessions.change_control(
            principal,
            session_id,
            request.action,
            request.expected_version,
            request.to_user_id,
            request.auto_return,
        )
        self._metrics.handoffs[ACTION_NAMES[request.action]] += 1
        await self._notify(session)
        return session_json(session)

    async def request_control(self, principal: Principal, session_id: str) -> JsonObject:
        """Ask the person in control for it (docs/state-machine.md)."""
        check_scope(principal, session_id)
        return session_json(await self._sessions.request_control(principal, session_id))

    async def end(self, principal: Principal, session_id: str) -> JsonObject:
        check_scope(principal, session_id)
        session = await self._sessions.end(principal, session_id, f"ended by {principal.user_id}")
        self._metrics.handoffs["end"] += 1
        await self._notify(session)
        return session_json(session)

    async def _notify(self, session: session_pb2.Session) -> None:
        for observer in self.observers:
            await observer(session)

    async def stream(
        self, principal: Principal, session_id: str, base_url: str, watch: bool = False
    ) -> StreamAnswer:
        """Where a viewer connects; `watch` asks for a watch-only stream, served
        from the session's shared feed (docs/stream.md, "Watch-only streams").
        A view share's streams are always watch-only: they can never send input."""
        check_scope(principal, session_id)
        access = await self._sessions.stream_access(principal, session_id)
        share = principal.share
        watch = watch or (share is not None and share.role == "view")
        use = WATCH_USE if watch else STREAM_USE
        grant = self._auth.issue_stream_token(
            session_id, principal, self._stream_token_lifetime_s, use=use
        )
        path = STREAM_PATH.format(id=session_id)
        url = f"{websocket_base(base_url)}{path}?token={grant.token}"
        view_only = access.view_only or watch
        return StreamAnswer(url=url, view_only=view_only, expires_at=grant.expires_at)

    async def cdp(self, principal: Principal, session_id: str, base_url: str) -> JsonObject:
        """Where the caller's CDP client connects to the session's browser."""
        # Its owner or an operator; NotFound for anyone else.
        if principal.share is not None:
            raise PermissionDenied("a share's token cannot open the browser's CDP endpoint")
        await self._sessions.get(principal, session_id)
        grant = self._auth.issue_stream_token(
            session_id, principal, self._stream_token_lifetime_s, use=CDP_USE
        )
        path = CDP_PATH.format(id=session_id)
        return {
            "url": f"{websocket_base(base_url)}{path}?token={grant.token}",
            "expiresAt": iso_moment(grant.expires_at),
        }

    async def create_share(
        self, principal: Principal, session_id: str, body: JsonObject, base_url: str
    ) -> JsonObject:
        """A share of the session: its page's URL and its bearer token (README, "Sharing")."""
        check_scope(principal, session_id)
        role, ttl_s, label = parse_share(body)
        share = await self._sessions.create_share(principal, session_id, role, ttl_s, label)
        scope = ShareScope(session_id, share.id, share_json(share)["role"])
        token = self._auth.issue_share_token(scope, share.expire_time.ToMicroseconds() / 1e6)
        return {
            **share_json(share),
            "url": share_url(base_url, share, session_id, token),
            "token": token,
        }

    async def list_shares(self, principal: Principal, session_id: str) -> JsonObject:
        """{"shares": [...]}: the session's shares that still open it."""
        check_scope(principal, session_id)
        shares = await self._sessions.list_shares(principal, session_id)
        return {"shares": [share_json(share) for share in shares]}

    async def revoke_share(self, principal: Principal, session_id: str, share_id: str) -> None:
        check_scope(principal, session_id)
        await self._sessions.revoke_share(principal, session_id, share_id)

    def _observe_steps(self, session_id: str) -> None:
        """Feed step durations of a session created here into the metrics."""

        async def observe(event: Event, initial: bool) -> None:
            if event_kind(event) != "step" or initial:
                return
            step = event.step.step
            if step.status in (
                automation_pb2.STEP_STATUS_SUCCEEDED,
                automation_pb2.STEP_STATUS_FAILED,
            ):
                self._metrics.step_durations.observe(step.duration_ms / 1000)

        self._hub.subscribe(session_id, observe)
