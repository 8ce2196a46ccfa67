"""`make run`: the whole stack on one machine, each service its own process.

Starts display, automation, session and edge in that order and waits until each
is ready (gRPC health SERVING, or the edge's /healthz answering 200); the edge
prints the console URL with its token. Every service gets the same internal
credential (BATON_INTERNAL_TOKEN), generated for this run when unset. Started as
root, it runs every service as user baton (deploy/service_user.py). On Ctrl-C
or SIGTERM it stops them in reverse order: SIGTERM to each service, which stops
its own children, then SIGKILL to whatever is left after a grace. A service that
fails to start stops the stack; one that dies later is restarted with backoff
while the others keep running (deploy/supervisor.py), and its successor reaps
what it left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass

from deploy.service_user import prepare, service_user
from deploy.supervisor import Ready, Start, SupervisedService, supervise_all
from services.runtime.entrypoint import run_service, stop_signals
from services.runtime.errors import Unavailable
from services.runtime.grpc_client import is_serving, open_channel
from services.runtime.grpc_tls import GrpcTls
from services.runtime.internal_auth import ENV_NAME, InternalToken
from services.runtime.processes import start_process
from services.runtime.settings import Env

STOP_GRACE_S = 10.0
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    # gRPC port to probe for health, or None for the HTTP edge.
    grpc_port: int | None
    http_url: str | None = None
    # Where the gRPC health probe goes: a worker host's services listen on its
    # own address in a cluster (deploy/worker_host.py).
    grpc_host: str = "127.0.0.1"
    # The gRPC health check's service name; "" is the server's overall health.
    health_service: str = ""
    # How long a stop waits for the service after SIGTERM before SIGKILL.
    stop_grace_s: float = STOP_GRACE_S


def stack(env: Mapping[str, str]) -> list[Service]:
    host = env.get("BATON_EDGE_HOST", "127.0.0.1")
    edge_port = env.get("BATON_EDGE_PORT", "8080")
    scheme = "https" if env.get("BATON_TLS_CERT") else "http"
    return [
        Service("display", "services.display", int(env.get("BATON_DISPLAY_PORT", "50052"))),
        Service(
            "automation", "services.automation", int(env.get("BATON_AUTOMATION_PORT", "50053"))
        ),
        Service("session", "services.session", int(env.get("BATON_SESSION_PORT", "50051"))),
        Service("edge", "services.edge", None, f"{scheme}://{host}:{edge_port}/healthz"),
    ]


def _http_ready(url: str) -> bool:
    try:
        # Our own edge on this machine: a self-signed certificate is fine here.
        context = ssl._create_unverified_context()
        with urllib.request.urlopen(url, timeout=1, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass(frozen=True)
class Probe:
    """How the launcher reaches the services it checks: the services' own TLS
    settings (BATON_GRPC_TLS_*), so health checks work with TLS on too."""

    token: InternalToken
    tls: GrpcTls

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Probe:
        return cls(InternalToken(env[ENV_NAME]), GrpcTls.from_env(Env(env)))


async def wait_ready(service: Service, process: asyncio.subprocess.Process, probe: Probe) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise Unavailable(f"{service.name} exited with status {process.returncode}")
        if service.grpc_port is not None:
            address = f"{service.grpc_host}:{service.grpc_port}"
            async with open_channel(address, probe.token, probe.tls) as channel:
                ready = await is_serving(channel, service.health_service)
        else:
            assert service.http_url is not None
            ready = await asyncio.to_thread(_http_ready, service.http_url)
        if ready:
            return
        await asyncio.sleep(0.2)
    raise Unavailable(f"{service.name} was not ready within {READY_TIMEOUT_S:g} s")


def with_internal_token(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ`, with a fresh BATON_INTERNAL_TOKEN when it has none."""
    env = dict(environ)
    if not env.get(ENV_NAME):
        env[ENV_NAME] = InternalToken.generate().value
    return env


def starter(
    service: Service,
    env: Mapping[str, str],
    stdout: int | None = None,
    wrapper: Sequence[str] = (),
) -> Start:
    """Starts the service's module with `env`, under `wrapper` (a command that
    execs its arguments); its output goes to ours, or to `stdout`."""

    def start() -> Awaitable[asyncio.subprocess.Process]:
        argv = [*wrapper, sys.executable, "-m", service.module]
        return start_process(argv, env=env, stdout=stdout, stderr=None)

    return start


def readiness(service: Service, probe: Probe) -> Ready:
    def ready(process: asyncio.subprocess.Process) -> Awaitable[None]:
        return wait_ready(service, process, probe)

    return ready


async def main() -> None:
    env = with_internal_token(os.environ)
    await run_stack(stack(env), env)


async def run_stack(
    services: list[Service], env: Mapping[str, str], stop_in_start_order: bool = False
) -> None:
    """Start `services` in order, restart crashed ones, stop all on a signal:
    in reverse order, or in start order with `stop_in_start_order`."""
    # Bad TLS files stop the launch here, with the setting's name.
    probe = Probe.from_env(env)
    # Started as root, the services run as user baton (deploy/service_user.py).
    user = service_user(env)
    wrapper: tuple[str, ...] = ()
    if user is not None:
        env = user.environment(env)
        prepare(user, env)
        wrapper = user.wrapper()
    running: list[SupervisedService] = []
    # The handlers stay for the whole block: a second Ctrl-C must not cut the
    # clean-up short.
    with stop_signals(lambda: print("baton: still stopping", flush=True)) as stop_event:
        stop = asyncio.create_task(stop_event.wait())
        try:
            for service in services:
                supervised = SupervisedService(
                    service.name,
                    starter(service, env, wrapper=wrapper),
                    readiness(service, probe),
                    service.stop_grace_s,
                )
                running.append(supervised)
                ready = asyncio.create_task(supervised.start())
                await asyncio.wait({ready, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop.done():
                    ready.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Unavailable):
                        await ready
                    return
                ready.result()
                print(f"baton: {service.name} ready", flush=True)
            # The edge has printed the console URL (with the token) above.
            print("\nbaton: all services ready; Ctrl-C stops everything\n", flush=True)
            await supervise_all(running, stop)
        finally:
            for supervised in running if stop_in_start_order else reversed(running):
                await supervised.stop()
            stop.cancel()
            print("baton: stopped", flush=True)


if __name__ == "__main__":
    run_service(main)
