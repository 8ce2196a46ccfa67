"""The container image's HEALTHCHECK (deploy/Dockerfile): one command for every
service of the one image.

    python -m services.runtime.healthcheck [display|automation|session|edge]

Without an argument the service is the one this container runs: PID 1's command
(`python -m services.<name>`, as deploy/k8s and deploy/compose.yaml start it).
Where it listens comes from that service's own settings class, read from this
environment (the container's), so the check dials what the service bound:
gRPC `grpc.health.v1.Health/Check` on the service's own name for display,
automation and session (what the Kubernetes probes ask), `GET /healthz` for the
edge. Exit 0 when serving; otherwise 1 and one line on standard error, never a
traceback (deploy/README.md, "Image and compose").
"""

from __future__ import annotations

import asyncio
import itertools
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.grpc_tls import GrpcTls
from services.runtime.settings import ConfigError, Env

GRPC_SERVICES = ("display", "automation", "session")
SERVICES = (*GRPC_SERVICES, "edge")
DEFAULT_TIMEOUT_S = 3.0


class HealthcheckError(Exception):
    """Unhealthy, or nothing to check: the message is the one line printed."""


@dataclass(frozen=True)
class GrpcTarget:
    address: str
    # The name the service registers with its health servicer.
    service_name: str
    tls: GrpcTls


@dataclass(frozen=True)
class HttpTarget:
    url: str


Target = GrpcTarget | HttpTarget


def service_from_command(argv: Sequence[str]) -> str | None:
    """The Baton service a command line runs (`... -m services.<name>`), or None."""
    for flag, module in itertools.pairwise(argv):
        if flag == "-m" and module.startswith("services."):
            name = module.removeprefix("services.")
            return name if name in SERVICES else None
    return None


def pid1_command(proc: Path = Path("/proc")) -> list[str]:
    try:
        raw = (proc / "1" / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def dial_host(listen_host: str) -> str:
    """Where to reach a server bound to `listen_host` from inside its own host."""
    if listen_host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if listen_host in ("::", "[::]"):
        return "[::1]"
    return f"[{listen_host}]" if ":" in listen_host else listen_host


def grpc_service_name(service: str) -> str:
    # From the generated descriptors, as each service's server.py registers it;
    # imported here so a check never loads a whole service.
    if service == "display":
        from baton.display.v1 import display_pb2

        return str(display_pb2.DESCRIPTOR.services_by_name["DisplayService"].full_name)
    if service == "automation":
        from baton.automation.v1 import automation_pb2

        return str(automation_pb2.DESCRIPTOR.services_by_name["AutomationService"].full_name)
    from baton.session.v1 import session_pb2

    return str(session_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name)


def target_for(service: str, env: Env) -> Target:
    """What to ask, read with the service's own settings (raises ConfigError as
    the service itself would on the same environment)."""
    if service == "edge":
        from services.edge.settings import EdgeSettings

        edge = EdgeSettings.from_env(env)
        scheme = "https" if edge.tls else "http"
        return HttpTarget(f"{scheme}://{dial_host(edge.host)}:{edge.port}/healthz")
    host: str
    port: int
    tls: GrpcTls
    if service == "display":
        from services.display.settings import DisplaySettings

        display = DisplaySettings.from_env(env)
        host, port, tls = display.listen_host, display.port, display.grpc_tls
    elif service == "automation":
        from services.automation.settings import AutomationSettings

        automation = AutomationSettings.from_env(env)
        host, port, tls = automation.listen_host, automation.port, automation.grpc_tls
    elif service == "session":
        from services.session.settings import SessionSettings

        session = SessionSettings.from_env(env)
        host, port, tls = session.bind_host, session.port, session.grpc_tls
    else:
        raise HealthcheckError(f"no health check for {service!r}: expected one of {SERVICES}")
    return GrpcTarget(f"{dial_host(host)}:{port}", grpc_service_name(service), tls)


async def check_grpc(target: GrpcTarget, timeout_s: float) -> None:
    if target.tls.serves_tls and not target.tls.dials_tls:
        raise HealthcheckError(
            f"{target.address} serves TLS: set BATON_GRPC_TLS_CA so the check can dial it"
        )
    credentials = target.tls.channel_credentials() if target.tls.serves_tls else None
    channel = (
        grpc.aio.secure_channel(target.address, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(target.address)
    )
    async with channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=target.service_name), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise HealthcheckError(
                f"{target.service_name} at {target.address}: {exc.code().name} "
                f"({exc.details() or 'no details'})"
            ) from None
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        raise HealthcheckError(f"{target.service_name} at {target.address}: {status}")


def check_http(target: HttpTarget, timeout_s: float) -> None:
    # The edge's own certificate names its public host, not loopback: this is a
    # liveness check of the process behind it, not of its identity.
    context = None
    if target.url.startswith("https:"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(target.url, timeout=timeout_s, context=context) as reply:
            status = reply.status
    except urllib.error.HTTPError as exc:
        raise HealthcheckError(f"GET {target.url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise HealthcheckError(f"GET {target.url}: {reason}") from None
    if status != 200:
        raise HealthcheckError(f"GET {target.url}: HTTP {status}")


def check(target: Target, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Return when the target is serving; raise HealthcheckError otherwise."""
    if isinstance(target, HttpTarget):
        check_http(target, timeout_s)
    else:
        asyncio.run(check_grpc(target, timeout_s))


def run(
    argv: Sequence[str],
    environ: Mapping[str, str],
    command_of_pid1: Callable[[], list[str]] = pid1_command,
) -> int:
    """The command: exit status 0 when serving, 1 with one line otherwise."""
    try:
        if len(argv) > 1:
            raise HealthcheckError("usage: python -m services.runtime.healthcheck [SERVICE]")
        service = argv[0] if argv else service_from_command(command_of_pid1())
        if service is None:
            raise HealthcheckError(
                "cannot tell which service this container runs (PID 1 is not "
                f"'python -m services.<name>'): pass one of {', '.join(SERVICES)}"
            )
        if service not in SERVICES:
            raise HealthcheckError(f"unknown service {service!r}: expected one of {SERVICES}")
        check(target_for(service, Env(environ)))
    except (HealthcheckError, ConfigError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:], os.environ))
