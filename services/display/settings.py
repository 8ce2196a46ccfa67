"""Display service settings: a frozen dataclass read once from the environment."""

from __future__ import annotations

import enum
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from services.runtime.grpc_tls import PLAINTEXT, GrpcTls, read_pem
from services.runtime.internal_auth import InternalToken
from services.runtime.settings import ConfigError, Env
from services.runtime.worker_registry import DEFAULT_LEASE_TTL_S


class Backend(enum.Enum):
    """How a slot's X display and VNC server are made."""

    # TigerVNC's Xvnc: X server and VNC server in one process.
    XVNC = "xvnc"
    # Xvfb with x11vnc attached to it.
    XVFB_X11VNC = "xvfb-x11vnc"


@dataclass(frozen=True)
class NumberRange:
    """An inclusive range of integers (display numbers, TCP ports)."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if self.first < 0 or self.last < self.first:
            raise ConfigError(f"invalid range {self.first}-{self.last}")

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.first, self.last + 1))

    @classmethod
    def parse(cls, name: str, text: str) -> NumberRange:
        first, sep, last = text.partition("-")
        try:
            if not sep:
                return cls(int(first), int(first))
            return cls(int(first), int(last))
        except ValueError:
            raise ConfigError(f"{name}={text!r} is not a range like 100-199") from None


def parse_size(name: str, text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    try:
        if not sep:
            raise ValueError
        return int(width), int(height)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a size like 1280x720") from None


# Listen addresses that mean "every interface": no edge can dial them.
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


RECORDINGS_DIR_NAME = "recordings"


@dataclass(frozen=True)
class RecordingBucket:
    """Where finished recordings go when an S3-compatible store is configured
    (README.md, "Recording"); credentials None: boto3's own chain (the shared
    credentials file, an instance role)."""

    bucket: str
    # None: AWS's own endpoint for the region.
    endpoint_url: str | None = None
    prefix: str = ""
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)

    def key_for(self, session_id: str) -> str:
        return f"{self.prefix}{session_id}.mp4"

    @classmethod
    def from_env(cls, env: Env) -> RecordingBucket | None:
        bucket = env.optional("BATON_RECORDING_S3_BUCKET")
        if bucket is None:
            for name in ("BATON_RECORDING_S3_URL", "BATON_RECORDING_S3_PREFIX"):
                if env.optional(name) is not None:
                    raise ConfigError(f"{name} is set but BATON_RECORDING_S3_BUCKET is not")
            return None
        endpoint = env.optional("BATON_RECORDING_S3_URL")
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                f"BATON_RECORDING_S3_URL={endpoint!r} is not an http:// or https:// URL"
            )
        key_id = env.optional("AWS_ACCESS_KEY_ID")
        secret = env.optional("AWS_SECRET_ACCESS_KEY")
        if (key_id is None) != (secret is None):
            raise ConfigError("set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither")
        return cls(
            bucket=bucket,
            endpoint_url=endpoint,
            prefix=env.text("BATON_RECORDING_S3_PREFIX", ""),
            region=env.text("BATON_RECORDING_S3_REGION", "us-east-1"),
            access_key_id=key_id,
            secret_access_key=secret,
        )


def default_state_dir(grpc_port: int, environ: Env) -> Path:
    runtime_dir = environ.optional("XDG_RUNTIME_DIR")
    base = Path(runtime_dir) if runtime_dir else Path("/tmp")
    return base / f"baton-display-{grpc_port}"


@dataclass(frozen=True)
class DisplaySettings:
    port: int = 50052
    # The gRPC listen address. The VNC servers are on 127.0.0.1 whatever this is.
    listen_host: str = "127.0.0.1"
    host_id: str = "localhost"
    backend: Backend = Backend.XVNC
    max_slots: int = 8
    warm_slots: int = 1
    # A claimed warm slot's replacement starts this long after the claim, out of
    # the way of the claiming session's first page (bench figure 2.6).
    warm_refill_delay_s: float = 1.0
    default_width: int = 1280
    default_height: int = 720
    displays: NumberRange = NumberRange(100, 199)
    vnc_ports: NumberRange = NumberRange(15900, 15999)
    # 0: the host's websockify listens on a free port picked at start-up.
    websockify_port: int = 0
    # The host's stream endpoint (README.md, "Network"): where its websockify
    # listens, the host edges reach it at (empty: the listen host), and TLS
    # (wss:// only) when both PEM files are set.
    websockify_host: str = "127.0.0.1"
    stream_advertise_host: str = ""
    stream_tls_cert: str | None = None
    stream_tls_key: str | None = None
    state_dir: Path = Path("/tmp/baton-display-50052")
    # Where recorded sessions' videos go (README.md, "Recording"); None:
    # `<state dir>/recordings`, which a clean stop keeps (state_dir.py).
    recording_dir: Path | None = None
    # Seconds a recording is kept after it was last written.
    recording_retention_s: float = 7 * 24 * 3600.0
    # Finished recordings go to this bucket, then leave the disk; None: disk only.
    recording_bucket: RecordingBucket | None = None
    # Seconds a slot may take from launch to a successful RFB handshake.
    ready_timeout: float = 10.0
    # Seconds between SIGTERM and SIGKILL when a slot is stopped.
    stop_grace: float = 2.0
    log_level: str = "INFO"
    traces_exporter: str = "none"
    # The deployment's service-to-service credential (BATON_INTERNAL_TOKEN).
    internal_token: InternalToken = field(kw_only=True)
    # TLS on this service's gRPC server and clients (BATON_GRPC_TLS_*).
    grpc_tls: GrpcTls = field(default=PLAINTEXT, kw_only=True)
    # The worker registry (README.md, "Worker registry"): empty, no registration.
    etcd_endpoints: tuple[str, ...] = ()
    worker_lease_ttl_s: int = DEFAULT_LEASE_TTL_S
    # Seconds a draining host (SIGTERM with registration) lets its slots live.
    drain_timeout_s: float = 300.0
    # What this host tells session services and edges in its record; None: derived
    # from where it listens (registration.advertised_record).
    display_advertise_address: str | None = None
    automation_advertise_address: str = "127.0.0.1:50053"

    @property
    def recordings_path(self) -> Path:
        return self.recording_dir or self.state_dir / RECORDINGS_DIR_NAME

    def __post_init__(self) -> None:
        if self.max_slots < 1:
            raise ConfigError("BATON_MAX_SLOTS must be at least 1")
        if self.warm_slots < 0 or self.warm_slots > self.max_slots:
            raise ConfigError("BATON_WARM_SLOTS must be between 0 and BATON_MAX_SLOTS")
        if len(self.displays) < self.max_slots:
            raise ConfigError("BATON_DISPLAY_NUMBERS holds fewer displays than BATON_MAX_SLOTS")
        if len(self.vnc_ports) < self.max_slots:
            raise ConfigError("BATON_VNC_PORTS holds fewer ports than BATON_MAX_SLOTS")
        if (self.stream_tls_cert is None) != (self.stream_tls_key is None):
            raise ConfigError("set both BATON_STREAM_TLS_CERT and BATON_STREAM_TLS_KEY, or neither")
        if (self.stream_advertise_host or self.websockify_host) in WILDCARD_HOSTS:
            raise ConfigError(
                f"BATON_WEBSOCKIFY_HOST={self.websockify_host} listens on every address: set "
                "BATON_STREAM_ADVERTISE_HOST to the address edges reach this host at"
            )

    @classmethod
    def from_env(cls, env: Env) -> DisplaySettings:
        port = env.integer("BATON_DISPLAY_PORT", 50052, minimum=0)
        backend_name = env.text("BATON_DISPLAY_BACKEND", Backend.XVNC.value)
        try:
            backend = Backend(backend_name)
        except ValueError:
            choices = ", ".join(b.value for b in Backend)
            raise ConfigError(
                f"BATON_DISPLAY_BACKEND={backend_name!r}: expected one of {choices}"
            ) from None
        width, height = parse_size(
            "BATON_DISPLAY_DEFAULT_SIZE", env.text("BATON_DISPLAY_DEFAULT_SIZE", "1280x720")
        )
        state_dir = env.optional("BATON_DISPLAY_STATE_DIR")
        recording_dir = env.optional("BATON_RECORDING_DIR")
        websockify_host = env.text("BATON_WEBSOCKIFY_HOST", "127.0.0.1")
        stream_cert = env.optional("BATON_STREAM_TLS_CERT")
        stream_key = env.optional("BATON_STREAM_TLS_KEY")
        # Read now so that a missing or unreadable file is a clear start-up error.
        if stream_cert is not None and stream_key is not None:
            read_pem("BATON_STREAM_TLS_CERT", stream_cert)
            read_pem("BATON_STREAM_TLS_KEY", stream_key)
        return cls(
            port=port,
            listen_host=env.text("BATON_DISPLAY_HOST", "127.0.0.1"),
            host_id=env.optional("BATON_HOST_ID") or socket.gethostname(),
            backend=backend,
            max_slots=env.integer("BATON_MAX_SLOTS", 8, minimum=1),
            warm_slots=env.integer("BATON_WARM_SLOTS", 1, minimum=0),
            warm_refill_delay_s=env.number("BATON_WARM_REFILL_DELAY_S", 1.0, minimum=0.0),
            default_width=width,
            default_height=height,
            displays=NumberRange.parse(
                "BATON_DISPLAY_NUMBERS", env.text("BATON_DISPLAY_NUMBERS", "100-199")
            ),
            vnc_ports=NumberRange.parse(
                "BATON_VNC_PORTS", env.text("BATON_VNC_PORTS", "15900-15999")
            ),
            websockify_port=env.integer("BATON_WEBSOCKIFY_PORT", 0, minimum=0),
            websockify_host=websockify_host,
            stream_advertise_host=env.text("BATON_STREAM_ADVERTISE_HOST", websockify_host),
            stream_tls_cert=stream_cert,
            stream_tls_key=stream_key,
            state_dir=Path(state_dir) if state_dir else default_state_dir(port, env),
            recording_dir=Path(recording_dir) if recording_dir else None,
            recording_retention_s=env.number(
                "BATON_RECORDING_RETENTION_S", 7 * 24 * 3600.0, minimum=1.0
            ),
            recording_bucket=RecordingBucket.from_env(env),
            ready_timeout=env.number("BATON_DISPLAY_READY_TIMEOUT", 10.0, minimum=0.1),
            stop_grace=env.number("BATON_DISPLAY_STOP_GRACE", 2.0, minimum=0.0),
            log_level=env.text("BATON_LOG_LEVEL", "INFO"),
            traces_exporter=env.text("OTEL_TRACES_EXPORTER", "none"),
            internal_token=InternalToken.from_env(env),
            grpc_tls=GrpcTls.from_env(env),
            etcd_endpoints=tuple(env.items("BATON_ETCD_ENDPOINTS")),
            worker_lease_ttl_s=env.integer(
                "BATON_WORKER_LEASE_TTL_S", DEFAULT_LEASE_TTL_S, minimum=1
            ),
            drain_timeout_s=env.number("BATON_DRAIN_TIMEOUT_S", 300.0, minimum=0.0),
            display_advertise_address=env.optional("BATON_DISPLAY_ADVERTISE_ADDRESS"),
            automation_advertise_address=env.optional("BATON_AUTOMATION_ADVERTISE_ADDRESS")
            or f"127.0.0.1:{env.integer('BATON_AUTOMATION_PORT', 50053, minimum=0)}",
        )
