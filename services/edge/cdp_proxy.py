"""The CDP endpoint: an agent's CDP WebSocket, relayed to its session's browser.

`GET /api/browser-session/{id}/cdp` answers a URL with a short-lived token for
that session and user (services/edge/README.md, "CDP"); Playwright's
`connect_over_cdp(url)` or Puppeteer's `connect({browserWSEndpoint: url})` opens
it here. The handshake's Origin must be one the edge serves, like the stream's,
and the token is spent. Each text frame is one CDP command; it goes through the
session service to the automation service of the session's worker host, which
holds commands that change the page while a person has control
(services/automation/cdp_gate.py); `?onUserControl=reject` refuses them at once
instead. What the gate did is counted in /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from baton.automation.v1 import automation_pb2
from services.edge.auth import CDP_USE, Authenticator
from services.edge.metrics import EdgeMetrics
from services.edge.origins import OriginPolicy
from services.edge.session_client import SessionClient
from services.edge.stream_proxy import CLOSE_NORMAL, CLOSE_POLICY_VIOLATION, report_audit
from services.runtime.errors import BatonError, Unauthenticated

log = logging.getLogger(__name__)

ON_USER_CONTROL = {"hold": False, "reject": True}
# Close codes for a session that cannot take a CDP client (gone, or no browser).
CLOSE_SESSION_UNAVAILABLE = 4404


class _CommandCounter:
    """How many CDP commands one connection sent (its audit event's detail)."""

    def __init__(self) -> None:
        self.sent = 0


class CdpProxy:
    def __init__(
        self,
        sessions: SessionClient,
        auth: Authenticator,
        metrics: EdgeMetrics,
        origins: OriginPolicy,
    ) -> None:
        self._sessions = sessions
        self._auth = auth
        self._metrics = metrics
        self._origins = origins

    async def handle(self, websocket: WebSocket) -> None:
        session_id = websocket.path_params["session_id"]
        origin = websocket.headers.get("origin")
        if not self._origins.allows(origin, websocket.url.scheme, websocket.headers.get("host")):
            await websocket.close(CLOSE_POLICY_VIOLATION, "origin not allowed")
            return
        mode = websocket.query_params.get("onUserControl", "hold")
        if mode not in ON_USER_CONTROL:
            await websocket.close(CLOSE_POLICY_VIOLATION, "onUserControl is hold or reject")
            return
        try:
            principal = self._auth.redeem_stream_token(
                websocket.query_params.get("token", ""), session_id, use=CDP_USE
            ).at(websocket.client)
        except Unauthenticated as exc:
            await websocket.close(CLOSE_POLICY_VIOLATION, exc.message[:120])
            return
        await websocket.accept()
        self._metrics.cdp_connections += 1
        await report_audit(
            self._sessions, principal, session_id, "cdp_opened", {"onUserControl": mode}
        )
        counter = _CommandCounter()
        try:
            replies = self._sessions.cdp(
                principal, session_id, ON_USER_CONTROL[mode], self._commands(websocket, counter)
            )
            relay = asyncio.ensure_future(self._relay(websocket, replies))
            # The connection lasts no longer than the credential it was asked with.
            expiry = principal.expires_at
            timeout = None if expiry is None else max(0.0, expiry - time.time())
            done, _ = await asyncio.wait({relay}, timeout=timeout)
            if not done:
                relay.cancel()
                await asyncio.gather(relay, return_exceptions=True)
                await _close(websocket, CLOSE_POLICY_VIOLATION, "token expired")
                return
            relay.result()
        except BatonError as exc:
            log.info("session %s: CDP client closed: %s", session_id, exc.message)
            await _close(websocket, CLOSE_SESSION_UNAVAILABLE, exc.message)
        except WebSocketDisconnect:
            pass
        finally:
            self._metrics.cdp_connections -= 1
            await report_audit(
                self._sessions, principal, session_id, "cdp_closed", {"commands": counter.sent}
            )
        await _close(websocket, CLOSE_NORMAL, "the session's browser is gone")

    async def _commands(self, websocket: WebSocket, counter: _CommandCounter) -> AsyncIterator[str]:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            counter.sent += 1
            # CDP is text; a binary frame is taken as UTF-8 (automation answers
            # what does not parse with a CDP error).
            text = message.get("text")
            yield (
                text if text is not None else (message.get("bytes") or b"").decode(errors="replace")
            )

    async def _relay(
        self, websocket: WebSocket, replies: AsyncIterator[automation_pb2.CdpResponse]
    ) -> None:
        async for reply in replies:
            if reply.HasField("gate"):
                self._count(reply.gate)
            elif websocket.client_state is WebSocketState.CONNECTED:
                await websocket.send_text(reply.message)

    def _count(self, event: automation_pb2.CdpGateEvent) -> None:
        if event.action == automation_pb2.CDP_GATE_ACTION_HELD:
            self._metrics.cdp_commands_held += 1
        elif event.action == automation_pb2.CDP_GATE_ACTION_RELEASED:
            self._metrics.cdp_held_seconds += event.held_seconds
        elif event.action == automation_pb2.CDP_GATE_ACTION_REJECTED:
            self._metrics.cdp_commands_rejected += 1


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.client_state is WebSocketState.CONNECTED:
        with contextlib.suppress(RuntimeError, asyncio.CancelledError, WebSocketDisconnect):
            await websocket.close(code, reason[:120])
