"""`make run` with TLS on every gRPC hop and on the stream endpoint (README.md, "Network")."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.request
from pathlib import Path

import grpc
import pytest

from baton.session.v1 import session_pb2, session_pb2_grpc
from services.display.rfb_client import probe
from tests.conftest import free_port, require_binary
from tests.deploy.stack_process import launched_until_ready
from tests.tls_certs import TestCa

TOKEN = "launcher-tls-test-token"


def _call(edge_port: int, method: str, path: str, body: object = None) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{edge_port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        answer: dict[str, object] = json.load(reply)
        return answer


@pytest.mark.timeout(120)
def test_make_run_with_tls_serves_a_session(tmp_path: Path) -> None:
    require_binary("Xvnc", "tigervnc-standalone-server")
    require_binary("chromium", "chromium")
    ca = TestCa(tmp_path / "ca")
    # One certificate for every service of this one machine: they dial 127.0.0.1.
    services = ca.issue("services", ("127.0.0.1",))
    edge_port, session_port = free_port(), free_port()
    env = {
        **os.environ,
        "BATON_EDGE_PORT": str(edge_port),
        "BATON_SESSION_PORT": str(session_port),
        "BATON_DISPLAY_PORT": str(free_port()),
        "BATON_AUTOMATION_PORT": str(free_port()),
        "BATON_API_TOKEN": TOKEN,
        "BATON_DISPLAY_NUMBERS": "1402-1405",
        "BATON_VNC_PORTS": "19602-19605",
        "BATON_MAX_SLOTS": "2",
        "BATON_DISPLAY_STATE_DIR": str(tmp_path / "display-state"),
        "BATON_SESSION_STATE_DIR": str(tmp_path / "session-state"),
        "BATON_PROFILE_ROOT": str(tmp_path / "profiles"),
        "BATON_LOG_LEVEL": "WARNING",
        "BATON_GRPC_TLS_CERT": str(services.cert),
        "BATON_GRPC_TLS_KEY": str(services.key),
        "BATON_GRPC_TLS_CA": str(ca.cert),
        # The edge verifies the stream endpoint with BATON_GRPC_TLS_CA too.
        "BATON_STREAM_TLS_CERT": str(services.cert),
        "BATON_STREAM_TLS_KEY": str(services.key),
    }
    with launched_until_ready(env) as (launcher, output):
        # The launcher's health checks got through TLS.
        assert any("all services ready" in line for line in output), "".join(output)
        session = _call(
            edge_port,
            "POST",
            "/api/browser-session",
            {"task": "look", "url": "http://127.0.0.1:9/", "maxSteps": 1},
        )
        assert session["state"] == "AI_CONTROL"
        stream = _call(edge_port, "GET", f"/api/browser-session/{session['id']}/stream")
        # The edge dialled the slot's wss:// websockify and checked its certificate.
        init = asyncio.run(probe(str(stream["url"]), open_timeout=20))
        assert (init.width, init.height) == (1280, 720)
        # gRPC is TLS only: a plaintext caller gets no answer at all.
        with grpc.insecure_channel(f"127.0.0.1:{session_port}") as channel:
            with pytest.raises(grpc.RpcError) as refused:
                session_pb2_grpc.SessionServiceStub(channel).ListSessions(
                    session_pb2.ListSessionsRequest(), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) == 0
