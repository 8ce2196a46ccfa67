"""Which browser pages may open the edge's WebSockets (stream and Socket.IO).

Browsers apply no same-origin rule to WebSockets: any page a user visits could
open the edge's stream with the user's stream URL, or Socket.IO with a token it
holds (cross-site WebSocket hijacking). Browsers always send `Origin`, so a
handshake is refused unless the Origin is the edge's own (the Host the browser
reached, or BATON_PUBLIC_URL) or listed in BATON_CORS_ORIGINS. A client that
sends no Origin is not a browser page and is allowed: its token is what admits
it.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit


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
