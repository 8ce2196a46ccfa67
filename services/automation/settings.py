"""Automation service settings: a frozen dataclass read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from services.runtime.grpc_tls import PLAINTEXT, GrpcTls
from services.runtime.internal_auth import InternalToken
from services.runtime.settings import Env


@dataclass(frozen=True)
class LlmSettings:
    """An OpenAI-compatible chat-completions endpoint; unset base_url: no LLM planner."""

    base_url: str | None = None
    model: str = ""
    api_key: str | None = None
    request_timeout_s: float = 120.0

    @property
    def configured(self) -> bool:
        return self.base_url is not None and self.model != ""


def prewarm_address(value: str) -> str | None:
    """The display service to follow for pre-warming; empty or "none" turns it off."""
    return None if value.lower() in ("", "none") else value


@dataclass(frozen=True)
class AutomationSettings:
    port: int = 50053
    # The gRPC listen address; the API trusts its callers, so keep it private.
    listen_host: str = "127.0.0.1"
    chromium_path: str = "/usr/bin/chromium"
    # How long an in-flight action may run after PauseTask before it is aborted.
    pause_grace_ms: int = 1000
    # Default timeout of one browser action; a step's timeout_ms overrides it.
    action_timeout_ms: int = 15000
    # After a pause, how long the agent's first action may wait for the person's
    # X input to reach the page (input_drain.py); 0 turns the drain off.
    input_drain_ms: int = 1000
    # How long a task goes on with nobody following its events (a session service
    # replica re-attaching: README "Following a task"); 0 stops it at once.
    task_grace_s: float = 30.0
    # Used when a task asks for max_steps 0.
    default_max_steps: int = 50
    # Parent of the per-session Chromium profile directories (None: the system temp dir).
    profile_root: Path | None = None
    # Display N's browser runs as uid base + N (browser_user.py).
    browser_uid_base: int = 300000
    # This host's display service, followed to keep a Chromium running on each
    # warm slot (None: no pre-warming). from_env defaults it to the local one.
    display_address: str | None = None
    llm: LlmSettings = LlmSettings()
    log_level: str = "info"
    traces_exporter: str = "none"
    # The deployment's service-to-service credential (BATON_INTERNAL_TOKEN).
    internal_token: InternalToken = field(kw_only=True)
    # TLS on this service's gRPC server and clients (BATON_GRPC_TLS_*).
    grpc_tls: GrpcTls = field(default=PLAINTEXT, kw_only=True)

    @classmethod
    def from_env(cls, env: Env) -> AutomationSettings:
        profile_root = env.optional("BATON_PROFILE_ROOT")
        display_address = env.text(
            "BATON_DISPLAY_ADDRESS", f"127.0.0.1:{env.integer('BATON_DISPLAY_PORT', 50052)}"
        ).strip()
        return cls(
            port=env.integer("BATON_AUTOMATION_PORT", cls.port, minimum=0),
            listen_host=env.text("BATON_AUTOMATION_HOST", cls.listen_host),
            chromium_path=env.text("BATON_CHROMIUM_PATH", cls.chromium_path),
            pause_grace_ms=env.integer("BATON_PAUSE_GRACE_MS", cls.pause_grace_ms, minimum=0),
            action_timeout_ms=env.integer(
                "BATON_ACTION_TIMEOUT_MS", cls.action_timeout_ms, minimum=1
            ),
            input_drain_ms=env.integer("BATON_INPUT_DRAIN_MS", cls.input_drain_ms, minimum=0),
            task_grace_s=env.number("BATON_TASK_GRACE_S", cls.task_grace_s, minimum=0),
            default_max_steps=env.integer(
                "BATON_DEFAULT_MAX_STEPS", cls.default_max_steps, minimum=1
            ),
            profile_root=Path(profile_root) if profile_root else None,
            browser_uid_base=env.integer("BATON_BROWSER_UID_BASE", cls.browser_uid_base, minimum=1),
            display_address=prewarm_address(display_address),
            llm=LlmSettings(
                base_url=env.optional("BATON_LLM_BASE_URL"),
                model=env.text("BATON_LLM_MODEL", ""),
                api_key=env.optional("BATON_LLM_API_KEY"),
                request_timeout_s=env.number(
                    "BATON_LLM_TIMEOUT_S", cls.llm.request_timeout_s, minimum=1
                ),
            ),
            log_level=env.text("BATON_LOG_LEVEL", cls.log_level),
            traces_exporter=env.text("OTEL_TRACES_EXPORTER", cls.traces_exporter),
            internal_token=InternalToken.from_env(env),
            grpc_tls=GrpcTls.from_env(env),
        )
