"""`python -m deploy.pod_cost`: keep a worker pod's deletion cost equal to its live sessions.

The sidecar of the worker-host pod (deploy/k8s/base/worker-host.yaml). Kubernetes
removes the pods with the lowest `controller.kubernetes.io/pod-deletion-cost`
first when a Deployment scales down, so a host holding no session goes before a
busy one (deploy/README.md, "Scaling down"). Every few seconds it asks the pod's
own display service (GetCapacity, on loopback) how many slots sessions hold and,
when that changed, patches its own pod's annotation through the API with the
pod's ServiceAccount (a Role allowing `patch` on pods of the namespace only).

Optional: without it (or without its RBAC) scale-down still drains, it only
picks pods at random. The pure part (`deletion_cost`, `annotation_patch`) is
separate from the I/O.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from baton.display.v1 import display_pb2, display_pb2_grpc
from services.runtime.entrypoint import run_service, until_stop_signal
from services.runtime.grpc_client import open_channel
from services.runtime.grpc_tls import PLAINTEXT, GrpcTls
from services.runtime.internal_auth import InternalToken
from services.runtime.logs import configure_logging
from services.runtime.settings import ConfigError, Env

log = logging.getLogger("deploy.pod_cost")

ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def deletion_cost(held_slots: int) -> int:
    """The pod's deletion cost: its live sessions (each holds one slot)."""
    return max(0, held_slots)


def annotation_patch(cost: int) -> bytes:
    """A JSON merge patch setting the annotation (Kubernetes wants it a string)."""
    return json.dumps({"metadata": {"annotations": {ANNOTATION: str(cost)}}}).encode()


@dataclass(frozen=True)
class PodCostSettings:
    pod_name: str
    namespace: str
    # The Kubernetes API, e.g. https://10.96.0.1:443 (from KUBERNETES_SERVICE_*).
    api_url: str
    display_address: str = "127.0.0.1:50052"
    interval_s: float = 5.0
    service_account_dir: Path = SERVICE_ACCOUNT_DIR
    internal_token: InternalToken = field(kw_only=True)
    grpc_tls: GrpcTls = field(default=PLAINTEXT, kw_only=True)

    @classmethod
    def from_env(cls, env: Env) -> PodCostSettings:
        pod_name = env.optional("BATON_POD_NAME")
        namespace = env.optional("BATON_POD_NAMESPACE")
        api_host = env.optional("KUBERNETES_SERVICE_HOST")
        if pod_name is None or namespace is None or api_host is None:
            raise ConfigError(
                "BATON_POD_NAME, BATON_POD_NAMESPACE (the downward API) and "
                "KUBERNETES_SERVICE_HOST are needed: this runs inside a Kubernetes pod"
            )
        port = env.integer("KUBERNETES_SERVICE_PORT", 443, minimum=1)
        host = f"[{api_host}]" if ":" in api_host else api_host
        return cls(
            pod_name=pod_name,
            namespace=namespace,
            api_url=f"https://{host}:{port}",
            display_address=env.text(
                "BATON_DISPLAY_ADDRESS", f"127.0.0.1:{env.integer('BATON_DISPLAY_PORT', 50052)}"
            ),
            interval_s=env.number("BATON_POD_COST_INTERVAL_S", cls.interval_s, minimum=0.1),
            internal_token=InternalToken.from_env(env),
            grpc_tls=GrpcTls.from_env(env),
        )


class PodAnnotator:
    """PATCHes one pod's metadata through the Kubernetes API (blocking; run in a thread)."""

    def __init__(self, settings: PodCostSettings, context: ssl.SSLContext | None = None) -> None:
        self._url = (
            f"{settings.api_url}/api/v1/namespaces/{settings.namespace}/pods/{settings.pod_name}"
        )
        self._account = settings.service_account_dir
        self._context = context

    def patch(self, body: bytes) -> None:
        # The projected token is rotated by the kubelet: read it for each call.
        token = (self._account / "token").read_text().strip()
        request = urllib.request.Request(
            self._url,
            data=body,
            method="PATCH",
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/merge-patch+json",
            },
        )
        with urllib.request.urlopen(request, timeout=10, context=self._context) as answer:
            answer.read()


def cluster_ssl_context(settings: PodCostSettings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(settings.service_account_dir / "ca.crt"))


async def keep_cost(
    held_slots: Callable[[], Awaitable[int]],
    patch: Callable[[bytes], None],
    interval_s: float,
    rounds: int | None = None,
) -> None:
    """Every `interval_s`, patch the cost when it differs from the last one set.
    A failed read or patch is logged and tried again next round."""
    applied: int | None = None
    done = 0
    while rounds is None or done < rounds:
        done += 1
        try:
            cost = deletion_cost(await held_slots())
            if cost != applied:
                await asyncio.to_thread(patch, annotation_patch(cost))
                log.info("pod deletion cost set to %d", cost)
                applied = cost
        except Exception as exc:  # the display restarting, the API away: next round
            log.warning("pod deletion cost not updated: %s", exc)
        if rounds is None or done < rounds:
            await asyncio.sleep(interval_s)


def display_held_slots(
    address: str, token: InternalToken, tls: GrpcTls
) -> Callable[[], Awaitable[int]]:
    channel = open_channel(address, token, tls)
    stub = display_pb2_grpc.DisplayServiceStub(channel)

    async def held() -> int:
        answer = await stub.GetCapacity(display_pb2.GetCapacityRequest(), timeout=5)
        return answer.used_slots

    return held


async def main() -> None:
    settings = PodCostSettings.from_env(Env(os.environ))
    configure_logging("INFO")
    annotator = PodAnnotator(settings, cluster_ssl_context(settings))
    held = display_held_slots(settings.display_address, settings.internal_token, settings.grpc_tls)
    loop = asyncio.create_task(keep_cost(held, annotator.patch, settings.interval_s))
    try:
        await until_stop_signal()
    finally:
        loop.cancel()


if __name__ == "__main__":
    run_service(main)
