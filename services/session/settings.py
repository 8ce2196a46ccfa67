"""Session service settings, read once from the environment in __main__."""

from __future__ import annotations

import enum
import socket
from dataclasses import dataclass, field
from pathlib import Path

from services.runtime.errors import InvalidArgument
from services.runtime.grpc_tls import PLAINTEXT, GrpcTls
from services.runtime.internal_auth import InternalToken
from services.runtime.settings import ConfigError, Env
from services.runtime.worker_registry import DEFAULT_LEASE_TTL_S
from services.session.audit_log import DEFAULT_AUDIT_RETENTION_S
from services.session.webhook_delivery import WebhookSettings


def default_state_dir(port: int, env: Env) -> Path:
    """Where the embedded store keeps its file: the user's state dir (XDG)."""
    state_home = env.optional("XDG_STATE_HOME")
    home = env.optional("HOME")
    base = Path(state_home) if state_home else Path(home) / ".local/state" if home else None
    return (base or Path("/var/lib")) / f"baton-session-{port}"


class RecordPolicy(enum.Enum):
    ON_REQUEST = "on_request"
    ALWAYS = "always"
    NEVER = "never"

    @classmethod
    def parse(cls, text: str) -> RecordPolicy:
        try:
            return cls(text)
        except ValueError:
            choices = ", ".join(p.value for p in cls)
            raise ConfigError(f"BATON_RECORD must be one of {choices}, not {text!r}") from None

    def records(self, asked: bool) -> bool:
        """Whether a session whose creator asked for recording (or not) is recorded."""
        if self is RecordPolicy.NEVER and asked:
            raise InvalidArgument("recording is turned off on this deployment (BATON_RECORD=never)")
        return self is RecordPolicy.ALWAYS or (self is RecordPolicy.ON_REQUEST and asked)


@dataclass(frozen=True)
class SessionSettings:
    port: int = 50051
    # Loopback by default: the gRPC API trusts its callers (the edge checks users).
    bind_host: str = "127.0.0.1"
    # Empty: the embedded in-memory store. Otherwise etcd endpoints (host:port).
    etcd_endpoints: tuple[str, ...] = ()
    # Without etcd: the embedded store's directory (sqlite_store.py); None keeps
    # sessions in memory only (tests). from_env always names one.
    state_dir: Path | None = None
    # Whether the worker hosts are the one fixed host below (no etcd, or
    # BATON_DISPLAY_ADDRESS set) rather than those registered in etcd.
    static_workers: bool = True
    # The fixed worker host this session service places sessions on.
    host_id: str = "local"
    display_address: str = "127.0.0.1:50052"
    automation_address: str = "127.0.0.1:50053"
    # A session with no viewer, no input, no AI step and no API call for this
    # long ends; so does any session older than max_lifetime_s.
    idle_timeout_s: float = 600.0
    # A FINISHED session (the agent is done) nobody took control of ends this
    # long after it finished or control was last returned, freeing its slot
    # (README, "The control state machine"); viewers do not keep it.
    finished_idle_s: float = 120.0
    # Viewers count only while a gateway refreshes them this often (it reports
    # each connected viewer every 30 s).
    viewer_lease_s: float = 90.0
    max_lifetime_s: float = 4 * 3600.0
    # On return_control, how long the agent's resume waits for every edge with
    # viewers to confirm its input gates are closed (README "The handoff fence").
    control_fence_timeout_s: float = 2.0
    # An ended session stays readable (GET, list) this long, then is removed.
    ended_retention_s: float = 3600.0
    # Audit events (audit_log.py) are kept this long, then the janitor drops them.
    audit_retention_s: float = DEFAULT_AUDIT_RETENTION_S
    # The worker hosts' registration lease (BATON_WORKER_LEASE_TTL_S): a dead
    # host's sessions are known lost within it.
    worker_lease_ttl_s: int = DEFAULT_LEASE_TTL_S
    # Longest wait for a slot and the task start when creating a session.
    start_timeout_s: float = 60.0
    default_width: int = 1280
    default_height: int = 720
    default_max_steps: int = 50
    # Which sessions are recorded (BATON_RECORD): those created with "record":
    # true (on_request), every one (always), none (never: asking is refused).
    record: RecordPolicy = RecordPolicy.ON_REQUEST
    # Live sessions one user may have at once (0: no limit). Operators are
    # exempt: they act for everyone, and the hosts' slots still bound them.
    max_sessions_per_user: int = 4
    # With etcd: the lease under which this replica claims the tasks it follows;
    # when the replica dies, another one follows them within about this long
    # (README "Following tasks across replicas").
    task_owner_ttl_s: int = 5
    log_level: str = "INFO"
    traces_exporter: str = "none"
    # The deployment's service-to-service credential (BATON_INTERNAL_TOKEN).
    internal_token: InternalToken = field(kw_only=True)
    # TLS on this service's gRPC server and clients (BATON_GRPC_TLS_*).
    grpc_tls: GrpcTls = field(default=PLAINTEXT, kw_only=True)
    # Where and how to post webhook events (BATON_WEBHOOK_*); off by default.
    webhook: WebhookSettings = field(default=WebhookSettings(), kw_only=True)

    @classmethod
    def from_env(cls, env: Env) -> SessionSettings:
        port = env.integer("BATON_SESSION_PORT", cls.port, minimum=0)
        state_dir = env.optional("BATON_SESSION_STATE_DIR")
        etcd_endpoints = tuple(env.items("BATON_ETCD_ENDPOINTS"))
        return cls(
            port=port,
            bind_host=env.text("BATON_SESSION_HOST", cls.bind_host),
            etcd_endpoints=etcd_endpoints,
            static_workers=not etcd_endpoints or env.optional("BATON_DISPLAY_ADDRESS") is not None,
            state_dir=Path(state_dir) if state_dir else default_state_dir(port, env),
            host_id=env.text("BATON_HOST_ID", socket.gethostname()),
            display_address=env.text(
                "BATON_DISPLAY_ADDRESS", f"127.0.0.1:{env.integer('BATON_DISPLAY_PORT', 50052)}"
            ),
            automation_address=env.text(
                "BATON_AUTOMATION_ADDRESS",
                f"127.0.0.1:{env.integer('BATON_AUTOMATION_PORT', 50053)}",
            ),
            idle_timeout_s=env.number("BATON_IDLE_TIMEOUT_S", cls.idle_timeout_s, minimum=1),
            finished_idle_s=env.number("BATON_FINISHED_IDLE_S", cls.finished_idle_s, minimum=1),
            viewer_lease_s=env.number("BATON_VIEWER_LEASE_S", cls.viewer_lease_s, minimum=1),
            max_lifetime_s=env.number("BATON_MAX_LIFETIME_S", cls.max_lifetime_s, minimum=1),
            control_fence_timeout_s=env.number(
                "BATON_CONTROL_FENCE_TIMEOUT_S", cls.control_fence_timeout_s, minimum=0.01
            ),
            ended_retention_s=env.number(
                "BATON_ENDED_RETENTION_S", cls.ended_retention_s, minimum=1
            ),
            audit_retention_s=env.number(
                "BATON_AUDIT_RETENTION_S", cls.audit_retention_s, minimum=60
            ),
            worker_lease_ttl_s=env.integer(
                "BATON_WORKER_LEASE_TTL_S", cls.worker_lease_ttl_s, minimum=1
            ),
            start_timeout_s=env.number("BATON_START_TIMEOUT_S", cls.start_timeout_s, minimum=1),
            default_max_steps=env.integer("BATON_DEFAULT_MAX_STEPS", cls.default_max_steps, 1),
            record=RecordPolicy.parse(env.text("BATON_RECORD", RecordPolicy.ON_REQUEST.value)),
            max_sessions_per_user=env.integer(
                "BATON_MAX_SESSIONS_PER_USER", cls.max_sessions_per_user, minimum=0
            ),
            task_owner_ttl_s=env.integer("BATON_TASK_OWNER_TTL_S", cls.task_owner_ttl_s, minimum=2),
            log_level=env.text("BATON_LOG_LEVEL", cls.log_level),
            traces_exporter=env.text("OTEL_TRACES_EXPORTER", cls.traces_exporter),
            internal_token=InternalToken.from_env(env),
            grpc_tls=GrpcTls.from_env(env),
            webhook=webhook_settings(env),
        )


def webhook_settings(env: Env) -> WebhookSettings:
    """BATON_WEBHOOK_URL (+ _SECRET, required with it; _TIMEOUT_S, _MAX_ATTEMPTS)."""
    url = env.text("BATON_WEBHOOK_URL", "")
    if not url:
        return WebhookSettings()
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"BATON_WEBHOOK_URL={url!r} is not an http:// or https:// URL")
    secret = env.text("BATON_WEBHOOK_SECRET", "")
    if len(secret) < 16:
        raise ConfigError(
            "BATON_WEBHOOK_SECRET must be set with BATON_WEBHOOK_URL (at least 16 characters): "
            "receivers check every event's Baton-Signature with it"
        )
    return WebhookSettings(
        url=url,
        secret=secret,
        timeout_s=env.number("BATON_WEBHOOK_TIMEOUT_S", WebhookSettings.timeout_s, minimum=0.1),
        max_attempts=env.integer(
            "BATON_WEBHOOK_MAX_ATTEMPTS", WebhookSettings.max_attempts, minimum=1
        ),
    )
