"""The worker pod's deletion cost (deploy/pod_cost.py): the pure part, then the
loop against a real gRPC display stand-in and a real HTTP server in the
Kubernetes API's place."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from baton.display.v1 import display_pb2, display_pb2_grpc
from deploy.pod_cost import (
    ANNOTATION,
    PodAnnotator,
    PodCostSettings,
    annotation_patch,
    deletion_cost,
    display_held_slots,
    keep_cost,
)
from services.runtime.grpc_server import start_server
from services.runtime.settings import ConfigError, Env
from tests.conftest import INTERNAL_TOKEN


def test_the_cost_is_the_live_sessions_as_a_string_annotation() -> None:
    assert deletion_cost(3) == 3
    assert deletion_cost(-1) == 0
    assert json.loads(annotation_patch(2)) == {"metadata": {"annotations": {ANNOTATION: "2"}}}


def test_settings_need_the_downward_api_and_the_api_address() -> None:
    base = {"BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value}
    with pytest.raises(ConfigError, match="BATON_POD_NAME"):
        PodCostSettings.from_env(Env(base))
    settings = PodCostSettings.from_env(
        Env(
            {
                **base,
                "BATON_POD_NAME": "worker-1",
                "BATON_POD_NAMESPACE": "baton",
                "KUBERNETES_SERVICE_HOST": "fd00::1",
                "KUBERNETES_SERVICE_PORT": "6443",
            }
        )
    )
    assert settings.api_url == "https://[fd00::1]:6443"
    assert settings.display_address == "127.0.0.1:50052"


class Capacity(display_pb2_grpc.DisplayServiceServicer):
    def __init__(self) -> None:
        self.held = 0

    async def GetCapacity(
        self, request: display_pb2.GetCapacityRequest, context: Any
    ) -> display_pb2.GetCapacityResponse:
        return display_pb2.GetCapacityResponse(max_slots=8, used_slots=self.held)


@pytest.fixture
def kubernetes_api() -> Iterator[tuple[str, list[tuple[str, str, dict[str, str], Any]]]]:
    """An HTTP server recording (method, path, headers, JSON body) of each request."""
    seen: list[tuple[str, str, dict[str, str], Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PATCH(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(("PATCH", self.path, dict(self.headers), body))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_the_pod_is_patched_when_its_sessions_change_and_only_then(
    tmp_path: Path, kubernetes_api: tuple[str, list[tuple[str, str, dict[str, str], Any]]]
) -> None:
    api_url, seen = kubernetes_api
    (tmp_path / "token").write_text("sa-token\n")
    # Only GetCapacity, which the sidecar calls; the stubs declare every method abstract.
    capacity = Capacity()  # type: ignore[abstract]
    display = await start_server(
        lambda server: display_pb2_grpc.add_DisplayServiceServicer_to_server(capacity, server),
        [],
        "127.0.0.1:0",
        INTERNAL_TOKEN,
    )
    settings = PodCostSettings(
        pod_name="worker-abc",
        namespace="baton",
        api_url=api_url,
        display_address=f"127.0.0.1:{display.port}",
        service_account_dir=tmp_path,
        internal_token=INTERNAL_TOKEN,
    )
    annotator = PodAnnotator(settings)
    held = display_held_slots(settings.display_address, settings.internal_token, settings.grpc_tls)
    try:
        await keep_cost(held, annotator.patch, 0.01, rounds=2)
        capacity.held = 3
        await keep_cost(held, annotator.patch, 0.01, rounds=1)
    finally:
        await display.stop(grace=0)
    # The first loop patched once (0, then 0 again: no call); the second set 3.
    assert [body for _, _, _, body in seen] == [
        {"metadata": {"annotations": {ANNOTATION: "0"}}},
        {"metadata": {"annotations": {ANNOTATION: "3"}}},
    ]
    method, path, headers, _ = seen[0]
    assert (method, path) == ("PATCH", "/api/v1/namespaces/baton/pods/worker-abc")
    assert headers["Authorization"] == "Bearer sa-token"
    assert headers["Content-Type"] == "application/merge-patch+json"


async def test_an_unreachable_display_patches_nothing_and_the_loop_goes_on(
    tmp_path: Path, kubernetes_api: tuple[str, list[tuple[str, str, dict[str, str], Any]]]
) -> None:
    api_url, seen = kubernetes_api
    (tmp_path / "token").write_text("sa-token")
    calls = 0

    async def failing() -> int:
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError("the display service is not up yet")

    settings = PodCostSettings(
        pod_name="p",
        namespace="n",
        api_url=api_url,
        service_account_dir=tmp_path,
        internal_token=INTERNAL_TOKEN,
    )
    await asyncio.wait_for(keep_cost(failing, PodAnnotator(settings).patch, 0.01, rounds=3), 5)
    assert calls == 3
    assert seen == []
