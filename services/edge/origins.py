"""Which browser pages may use the edge: WebSockets, REST, assets and framing.

Browsers apply no same-origin rule to WebSockets: any page a user visits could
open the edge's stream with the user's stream URL, or Socket.IO with a token it
holds (cross-site WebSocket hijacking). Browsers always send `Origin`, so a
handshake is refused unless the Origin is the edge's own (the Host the browser
reached, or BATON_PUBLIC_URL) or listed in BATON_CORS_ORIGINS. A client that
sends no Origin is not a browser page and is allowed: its token is what admits
it.

REST and the served assets follow the same list through CORS (`ListedOriginsCors`),
and so does framing `/embed` (`frame_ancestors`): services/edge/README.md,
"Origins".
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# What a listed origin's page may send: the API's methods and the two headers
# it needs (the token is a bearer header, never a cookie: no credentials mode).
CORS_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")
CORS_REQUEST_HEADERS = ("Authorization", "Content-Type")
# Readable by the page: when to ask again after a 429 or 503.
CORS_EXPOSED_HEADERS = ("Retry-After",)


def origin_of(url: str) -> str:
    """scheme://host[:port] of a URL, as browsers write Origin (no path, no slash)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class OriginPolicy:
    def __init__(self, public_url: str | None, cors_origins: Iterable[str]) -> None:
        self._fixed = {origin.rstrip("/").lower() for origin in cors_origins}
        if public_url:
            self._fixed.add(origin_of(public_url))

    def allows(self, origin: str | None, scheme: str, host: str | None) -> bool:
        """Whether a handshake with this Origin header may proceed.

        `scheme` is how the request reached us (http, https, ws or wss) and
        `host` its Host header: together, the edge's own origin.
        """
        if origin is None:
            return True
        origin = origin.rstrip("/").lower()
        if origin in self._fixed:
            return True
        if not host:
            return False
        http_scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        return origin == f"{http_scheme}://{host}".lower()


def normalized_origins(origins: Iterable[str]) -> tuple[str, ...]:
    """Origins as browsers send them: lower case, no trailing slash."""
    return tuple(origin.rstrip("/").lower() for origin in origins)


class ListedOriginsCors:
    """CORS for the pages of BATON_CORS_ORIGINS, and no CORS header for anyone else.

    Starlette's CORSMiddleware does the protocol (preflight, Vary, headers); it
    only sees requests whose Origin is listed. Alone it would still answer an
    unlisted origin's preflight with the allowed methods and headers, and add
    Access-Control-Expose-Headers to any response to a request with an Origin.
    Every response varies by Origin: a module the edge's own /embed loaded
    (same-origin, so no Origin and no CORS header) must not be taken from the
    browser's cache when the embedding page imports it.
    """

    def __init__(self, app: ASGIApp, origins: Iterable[str]) -> None:
        self._app = app
        self._listed = frozenset(normalized_origins(origins))
        self._cors = CORSMiddleware(
            app,
            allow_origins=sorted(self._listed),
            allow_methods=CORS_METHODS,
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        origin = Headers(scope=scope).get("origin")
        if origin is not None and origin.rstrip("/").lower() in self._listed:
            await self._cors(scope, receive, send)
            return

        async def send_varying(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                headers["Vary"] = ", ".join([*headers.getlist("Vary"), "Origin"])
            await send(message)

        await self._app(scope, receive, send_varying)


def frame_ancestors(origins: Iterable[str]) -> str:
    """The CSP that lets only the edge's own pages and the listed origins frame a page."""
    return " ".join(["frame-ancestors 'self'", *sorted(set(normalized_origins(origins)))])
