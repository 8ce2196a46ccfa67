"""The edge's ASGI application: REST, Socket.IO, the stream and the console.

One port serves everything: python-socketio's ASGI app takes /socket.io and
hands every other request to the Starlette app.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import socketio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from services.edge.audit_views import NDJSON, audit_lines, parse_audit_query
from services.edge.auth import Authenticator, Principal, bearer_token
from services.edge.cdp_proxy import CdpProxy
from services.edge.json_views import JsonObject, error_json, parse_json_object, state_name
from services.edge.metrics import EdgeMetrics, WebhookCounts
from services.edge.openapi import openapi_document
from services.edge.origins import ListedOriginsCors, OriginPolicy, frame_ancestors
from services.edge.rate_limit import RateLimiter
from services.edge.recording_views import RangeNotSatisfiable, parse_range, timeline_json
from services.edge.session_actions import SessionActions
from services.edge.session_client import SessionClient
from services.edge.settings import EdgeSettings
from services.edge.socketio_gateway import SocketGateway
from services.edge.stream_proxy import StreamProxy
from services.edge.upstream import upstream_ssl
from services.edge.watch_hub import SessionWatchHub
from services.runtime.errors import (
    BatonError,
    InvalidArgument,
    PayloadTooLarge,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from services.runtime.limits import MAX_SHARE_ID_BYTES, check_text
from services.runtime.session_ids import check_session_id
from services.runtime.slot_demand import FleetCapacity, RefusalWindow

log = logging.getLogger(__name__)

Endpoint = Callable[[Request, Principal], Awaitable[Response]]

_HTTP_ERRORS = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def _error_response(error: BatonError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.http_status == 401 else {}
    if isinstance(error, ResourceExhausted):
        # RFC 9110 10.2.3: when asking again may succeed.
        headers["Retry-After"] = str(error.retry_after_s)
    return JSONResponse(error_json(error), status_code=error.http_status, headers=headers)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds `max_bytes`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"request body exceeds {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"request body exceeds {max_bytes} bytes")
    return bytes(body)


def allowed_methods(methods: Iterable[str]) -> list[str]:
    """What a route's `Allow` header names: its methods, HEAD with GET, and OPTIONS."""
    allowed = {*methods, "OPTIONS"}
    if "GET" in allowed:
        allowed.add("HEAD")
    return sorted(allowed)


def _route(path: str, **by_method: Callable[[Request], Awaitable[Response]]) -> Route:
    """One route per path, so a 405's Allow header, and the answer to OPTIONS (RFC 9110
    9.3.7; no credentials needed, as for a CORS preflight), name every method it has."""
    allow = allowed_methods(by_method)

    async def dispatch(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers={"Allow": ", ".join(allow)})
        method = "GET" if request.method == "HEAD" else request.method
        return await by_method[method](request)

    return Route(path, dispatch, methods=allow)


class RestApi:
    def __init__(
        self,
        actions: SessionActions,
        sessions: SessionClient,
        auth: Authenticator,
        metrics: EdgeMetrics,
        settings: EdgeSettings,
        hub: SessionWatchHub,
        limiter: RateLimiter,
    ) -> None:
        self._hub = hub
        self._limiter = limiter
        self._actions = actions
        self._sessions = sessions
        self._auth = auth
        self._metrics = metrics
        self._settings = settings

    def routes(self) -> list[Route]:
        base = "/api/browser-session"
        session = base + "/{session_id}"
        return [
            _route(
                base, POST=self._authed("create", self.create), GET=self._authed("list", self.list)
            ),
            _route(
                session,
                GET=self._authed("get", self.get),
                DELETE=self._authed("delete", self.delete),
            ),
            _route(session + "/control", PUT=self._authed("control", self.control)),
            _route(
                session + "/control-requests",
                POST=self._authed("request_control", self.request_control),
            ),
            _route(session + "/stream", GET=self._authed("stream", self.stream)),
            _route(session + "/cdp", GET=self._authed("cdp", self.cdp)),
            _route(
                session + "/shares",
                POST=self._authed("create_share", self.create_share),
                GET=self._authed("list_shares", self.list_shares),
            ),
            _route(
                session + "/shares/{shareId}",
                DELETE=self._authed("revoke_share", self.revoke_share),
            ),
            _route(session + "/recording", GET=self._authed("recording", self.recording)),
            _route(session + "/timeline", GET=self._authed("timeline", self.timeline)),
            _route("/api/audit", GET=self._authed("audit", self.audit)),
            _route("/healthz", GET=self.healthz),
            _route("/metrics", GET=self.metrics),
            _route("/openapi.json", GET=self.openapi),
        ]

    def _authed(self, name: str, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            try:
                principal = self._auth.authenticate_header(request.headers.get("authorization")).at(
                    request.client
                )
                self._limiter.check(principal)
                if "session_id" in request.path_params:
                    # Before any gRPC call: a huge id would not fit in gRPC's
                    # metadata limit when quoted back in an error.
                    check_session_id(request.path_params["session_id"], "the session id")
                response = await endpoint(request, principal)
            except BatonError as exc:
                response = _error_response(exc)
            self._metrics.http_requests[(name, response.status_code)] += 1
            return response

        return handle

    async def _json_body(self, request: Request) -> JsonObject:
        return parse_json_object(
            await read_body(request, self._settings.max_body_bytes),
            self._settings.max_body_bytes,
        )

    async def create(self, request: Request, principal: Principal) -> Response:
        session = await self._actions.create(principal, await self._json_body(request))
        return JSONResponse(session, status_code=201)

    async def list(self, request: Request, principal: Principal) -> Response:
        size = request.query_params.get("pageSize", "0")
        if not size.isdigit() or len(size) > 9:
            raise InvalidArgument("pageSize must be a non-negative integer")
        token = request.query_params.get("pageToken", "")
        sessions, next_token = await self._actions.list(principal, int(size), token)
        return JSONResponse({"sessions": sessions, "nextPageToken": next_token or None})

    async def get(self, request: Request, principal: Principal) -> Response:
        return JSONResponse(await self._actions.get(principal, request.path_params["session_id"]))

    async def delete(self, request: Request, principal: Principal) -> Response:
        return JSONResponse(await self._actions.end(principal, request.path_params["session_id"]))

    async def control(self, request: Request, principal: Principal) -> Response:
        body = await self._json_body(request)
        session_id = request.path_params["session_id"]
        return JSONResponse(await self._actions.control(principal, session_id, body))

    async def request_control(self, request: Request, principal: Principal) -> Response:
        session_id = request.path_params["session_id"]
        return JSONResponse(await self._actions.request_control(principal, session_id))

    async def stream(self, request: Request, principal: Principal) -> Response:
        base_url = self._settings.public_url or str(request.base_url)
        watch = request.query_params.get("watch", "false")
        if watch not in ("true", "false"):
            raise InvalidArgument(f"watch must be true or false, not {watch!r}")
        answer = await self._actions.stream(
            principal, request.path_params["session_id"], base_url, watch == "true"
        )
        return JSONResponse(answer.json())

    async def recording(self, request: Request, principal: Principal) -> Response:
        """The session's video, whole or one byte range (README, "Recording and replay")."""
        session_id = request.path_params["session_id"]
        size = await self._sessions.recording_size(principal, session_id)
        try:
            wanted = parse_range(request.headers.get("range"), size)
        except RangeNotSatisfiable as exc:
            response = _error_response(exc)
            response.headers["Content-Range"] = f"bytes */{size}"
            return response
        start, length = (wanted.start, wanted.length) if wanted else (0, size)
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(length)}
        if wanted:
            headers["Content-Range"] = wanted.content_range(size)
        # An empty length asks for everything: a zero-byte answer needs no call.
        chunks = (
            self._sessions.read_recording(principal, session_id, start, length)
            if length
            else _nothing()
        )
        return StreamingResponse(
            chunks, status_code=206 if wanted else 200, headers=headers, media_type="video/mp4"
        )

    async def timeline(self, request: Request, principal: Principal) -> Response:
        session = await self._sessions.get(principal, request.path_params["session_id"])
        return JSONResponse(timeline_json(session))

    async def audit(self, request: Request, principal: Principal) -> Response:
        """The audit trail as JSON lines, for operators (README "Audit trail")."""
        if not principal.operator:
            raise PermissionDenied("the audit trail is for operators only")
        query = parse_audit_query(request.query_params)
        events = await self._sessions.list_audit(
            principal, query.since, query.session_id, query.limit
        )
        return Response(audit_lines(events), media_type=NDJSON)

    async def cdp(self, request: Request, principal: Principal) -> Response:
        base_url = self._settings.public_url or str(request.base_url)
        answer = await self._actions.cdp(principal, request.path_params["session_id"], base_url)
        return JSONResponse(answer)

    async def create_share(self, request: Request, principal: Principal) -> Response:
        base_url = self._settings.public_url or str(request.base_url)
        body = await self._json_body(request)
        share = await self._actions.create_share(
            principal, request.path_params["session_id"], body, base_url
        )
        return JSONResponse(share, status_code=201)

    async def list_shares(self, request: Request, principal: Principal) -> Response:
        shares = await self._actions.list_shares(principal, request.path_params["session_id"])
        return JSONResponse(shares)

    async def revoke_share(self, request: Request, principal: Principal) -> Response:
        share_id = request.path_params["shareId"]
        check_text(share_id, "the share id", MAX_SHARE_ID_BYTES)
        await self._actions.revoke_share(principal, request.path_params["session_id"], share_id)
        return Response(status_code=204)

    async def healthz(self, request: Request) -> Response:
        if await self._sessions.healthy():
            return JSONResponse({"status": "ok"})
        return _error_response(Unavailable("the session service is not ready"))

    async def metrics(self, request: Request) -> Response:
        try:
            self._authorize_scrape(request.headers.get("authorization"))
        except BatonError as exc:
            return _error_response(exc)
        # Served from what this edge keeps (its counters and the sessions its
        # WatchSession feeds follow) plus one health check: a scrape costs the
        # session service the same however many sessions there are.
        watched = self._hub.latest_sessions()
        by_state = Counter(state_name(session.state) for session in watched)
        up = await self._sessions.healthy()
        # The fleet half of the autoscaling signal: the registry's sums, one call.
        capacity: FleetCapacity | None = None
        if up:
            try:
                capacity = await self._sessions.capacity()
            except BatonError as exc:
                log.warning("/metrics: no worker capacity: %s", exc.message)
        webhooks: WebhookCounts | None = None
        if up:
            try:
                webhooks = await self._sessions.webhook_stats()
            except BatonError as exc:
                log.warning("/metrics: no webhook counts: %s", exc.message)
        text = self._metrics.render(by_state, up, capacity, time.monotonic(), webhooks)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    def _authorize_scrape(self, authorization: str | None) -> None:
        """The operator token or BATON_METRICS_TOKEN (a token good for nothing else)."""
        needed = "/metrics needs the operator token or BATON_METRICS_TOKEN"
        try:
            token = bearer_token(authorization)
            metrics_token = self._settings.metrics_token
            if metrics_token and hmac.compare_digest(token.encode(), metrics_token.encode()):
                return
            principal = self._auth.authenticate(token)
        except Unauthenticated:
            raise Unauthenticated(needed) from None
        if not principal.operator:
            raise PermissionDenied(needed)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_ERRORS.get(exc.status_code, "error")
    return JSONResponse(
        {"error": {"code": code, "message": str(exc.detail)}},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _internal_error(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log, never on the wire.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error_response(BatonError("internal error"))


@dataclass
class EdgeApp:
    asgi: ASGIApp
    hub: SessionWatchHub
    socket_server: socketio.AsyncServer
    metrics: EdgeMetrics
    rest_routes: list[Route]

    async def close(self) -> None:
        await self.hub.close()


def build_edge_app(settings: EdgeSettings, sessions: SessionClient, auth: Authenticator) -> EdgeApp:
    metrics = EdgeMetrics(
        capacity_refusals=RefusalWindow(settings.slot_refusal_window_s),
        slot_headroom=settings.slot_headroom,
    )
    hub = SessionWatchHub(sessions.watch)
    actions = SessionActions(sessions, auth, hub, metrics, settings.stream_token_lifetime_s)
    limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    rest = RestApi(actions, sessions, auth, metrics, settings, hub, limiter)
    origins = OriginPolicy(settings.public_url, settings.cors_origins)
    proxy = StreamProxy(
        sessions,
        auth,
        hub,
        metrics,
        origins,
        limiter,
        settings.max_viewers_per_user,
        upstream_ssl(settings.stream_tls_ca),
    )
    actions.observers.append(proxy.session_changed)
    cdp = CdpProxy(sessions, auth, metrics, origins)

    async def console(request: Request) -> Response:
        return FileResponse(settings.console_dir / "index.html")

    # Only the edge's own pages and BATON_CORS_ORIGINS' may frame /embed: a page
    # elsewhere cannot overlay its buttons (services/edge/README.md, "Embedding").
    embed_headers = {"Content-Security-Policy": frame_ancestors(settings.cors_origins)}

    async def embed(request: Request) -> Response:
        try:
            check_session_id(request.path_params["session_id"], "the session id")
        except BatonError as exc:
            return _error_response(exc)
        return FileResponse(settings.console_dir / "embed.html", headers=embed_headers)

    rest_routes = rest.routes()
    routes: list[Any] = [
        *rest_routes,
        WebSocketRoute("/api/browser-session/{session_id}/stream/ws", proxy.handle),
        WebSocketRoute("/api/browser-session/{session_id}/cdp/ws", cdp.handle),
        Route("/", console, methods=["GET"]),
        Route("/embed/{session_id}", embed, methods=["GET"]),
        Mount("/console", StaticFiles(directory=settings.console_dir, check_dir=False)),
        # The @baton/client package as one module (clients/js/README.md), noVNC and
        # the Socket.IO client inside: what the console and /embed are built on.
        Mount(
            "/assets/clients",
            StaticFiles(directory=settings.client_bundle_dir, check_dir=False),
        ),
    ]
    starlette = Starlette(
        routes=routes,
        # REST and the assets (ES modules a listed origin's page imports) answer
        # CORS for BATON_CORS_ORIGINS only (origins.py).
        middleware=[Middleware(ListedOriginsCors, origins=settings.cors_origins)],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )

    def socketio_origin_allowed(origin: str | None, environ: dict[str, Any]) -> bool:
        scope = environ["asgi.scope"]
        return origins.allows(origin, scope.get("scheme", "http"), environ.get("HTTP_HOST"))

    # A foreign Origin is refused before the handshake completes (origins.py).
    socket_server = socketio.AsyncServer(
        async_mode="asgi", cors_allowed_origins=socketio_origin_allowed
    )
    SocketGateway(socket_server, actions, auth, hub, limiter)
    asgi = socketio.ASGIApp(socket_server, other_asgi_app=starlette, socketio_path="socket.io")
    return EdgeApp(
        asgi=asgi, hub=hub, socket_server=socket_server, metrics=metrics, rest_routes=rest_routes
    )
