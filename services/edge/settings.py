"""Edge settings, read once from the environment in __main__."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from services.edge.origins import normalized_origins
from services.runtime import grpc_tls
from services.runtime.grpc_tls import PLAINTEXT, GrpcTls
from services.runtime.internal_auth import InternalToken
from services.runtime.settings import ConfigError, Env

_HERE = Path(__file__).resolve().parent
# RFC 7518 3.2: an HS256 key shorter than the hash can be guessed offline from
# any one token, and then any user's JWT forged.
MIN_JWT_SECRET_BYTES = 32


@dataclass(frozen=True)
class EdgeSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    session_address: str = "127.0.0.1:50051"
    # Empty means: generate one at start-up and print it with the console URL.
    api_token: str = ""
    jwt_secret: str | None = None
    # The longest a user JWT may live (exp - iat, or exp - now without iat).
    jwt_max_lifetime_s: float = 24 * 3600.0
    # Browser origins, besides the edge's own, whose pages may open the stream
    # WebSocket and Socket.IO, call REST, import the served assets and frame
    # /embed (scheme://host[:port], as browsers send Origin; origins.py).
    cors_origins: tuple[str, ...] = ()
    # A token that may read /metrics only (the operator token always may).
    metrics_token: str | None = None
    # How long a stream URL can be used to connect.
    stream_token_lifetime_s: float = 60.0
    max_body_bytes: int = 64 * 1024
    # Per user (operators exempt): requests per second with a burst, the
    # token bucket of rate_limit.py (0: no limit); stream connections open on
    # this edge at once.
    rate_limit_per_s: float = 20.0
    rate_limit_burst: int = 40
    max_viewers_per_user: int = 8
    # The CA that signed the worker hosts' stream endpoints (wss:// upstreams;
    # README.md, "Network"); None: the system's CAs.
    stream_tls_ca: str | None = None
    # HTTPS/WSS when both are set.
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    # The URL browsers reach this edge at, when it is not http(s)://host:port
    # (behind a proxy); stream URLs are made from the request otherwise.
    public_url: str | None = None
    console_dir: Path = _HERE / "console"
    # clients/js's browser build (`make setup` builds it), served as
    # /assets/clients/baton.js: the console's, /embed's and other pages' live view
    # element and client (noVNC and the Socket.IO client inside).
    client_bundle_dir: Path = _HERE.parent.parent / "clients" / "js" / "dist" / "browser"
    # The autoscaling signal on /metrics (deploy/README.md, "Autoscaling"): spare
    # slots wanted beyond live sessions, and how long a create refused for want
    # of a slot counts as demand.
    slot_headroom: int = 2
    slot_refusal_window_s: float = 120.0
    log_level: str = "INFO"
    traces_exporter: str = "none"
    # The deployment's service-to-service credential (BATON_INTERNAL_TOKEN).
    internal_token: InternalToken = field(kw_only=True)
    # TLS on this service's gRPC server and clients (BATON_GRPC_TLS_*).
    grpc_tls: GrpcTls = field(default=PLAINTEXT, kw_only=True)

    @property
    def tls(self) -> bool:
        return self.tls_certfile is not None and self.tls_keyfile is not None

    @classmethod
    def from_env(cls, env: Env) -> EdgeSettings:
        certfile = env.optional("BATON_TLS_CERT")
        keyfile = env.optional("BATON_TLS_KEY")
        if (certfile is None) != (keyfile is None):
            raise ConfigError("set both BATON_TLS_CERT and BATON_TLS_KEY, or neither")
        stream_ca = env.optional("BATON_STREAM_TLS_CA") or env.optional(grpc_tls.CA)
        # Read now: a missing CA file is a start-up error, not a broken stream later.
        grpc_tls.read_pem("BATON_STREAM_TLS_CA", stream_ca)
        jwt_secret = env.optional("BATON_JWT_SECRET")
        if jwt_secret is not None and len(jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
            raise ConfigError(f"BATON_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes")
        return cls(
            host=env.text("BATON_EDGE_HOST", cls.host),
            port=env.integer("BATON_EDGE_PORT", cls.port, minimum=0),
            session_address=env.text(
                "BATON_SESSION_ADDRESS",
                f"127.0.0.1:{env.integer('BATON_SESSION_PORT', 50051, minimum=1)}",
            ),
            api_token=env.text("BATON_API_TOKEN", ""),
            jwt_secret=jwt_secret,
            jwt_max_lifetime_s=env.number(
                "BATON_JWT_MAX_LIFETIME_S", cls.jwt_max_lifetime_s, minimum=1
            ),
            cors_origins=normalized_origins(env.items("BATON_CORS_ORIGINS")),
            metrics_token=env.optional("BATON_METRICS_TOKEN"),
            stream_token_lifetime_s=env.number(
                "BATON_STREAM_TOKEN_LIFETIME_S", cls.stream_token_lifetime_s, minimum=1
            ),
            max_body_bytes=env.integer("BATON_MAX_BODY_BYTES", cls.max_body_bytes, minimum=1024),
            rate_limit_per_s=env.number("BATON_RATE_LIMIT_PER_S", cls.rate_limit_per_s, minimum=0),
            rate_limit_burst=env.integer("BATON_RATE_LIMIT_BURST", cls.rate_limit_burst, minimum=1),
            max_viewers_per_user=env.integer(
                "BATON_MAX_VIEWERS_PER_USER", cls.max_viewers_per_user, minimum=1
            ),
            stream_tls_ca=stream_ca,
            tls_certfile=certfile,
            tls_keyfile=keyfile,
            public_url=env.optional("BATON_PUBLIC_URL"),
            slot_headroom=env.integer("BATON_SLOT_HEADROOM", cls.slot_headroom, minimum=0),
            slot_refusal_window_s=env.number(
                "BATON_SLOT_REFUSAL_WINDOW_S", cls.slot_refusal_window_s, minimum=1
            ),
            log_level=env.text("BATON_LOG_LEVEL", cls.log_level),
            traces_exporter=env.text("OTEL_TRACES_EXPORTER", cls.traces_exporter),
            internal_token=InternalToken.from_env(env),
            grpc_tls=GrpcTls.from_env(env),
        )
