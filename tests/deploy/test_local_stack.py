"""`make run`'s launcher: the whole stack as separate processes, stopped cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from baton.session.v1 import session_pb2, session_pb2_grpc
from tests.conftest import free_port, require_binary
from tests.deploy.stack_process import alive, launched_until_ready, process_tree


def test_make_run_starts_everything_and_sigterm_leaves_nothing(tmp_path: Path) -> None:
    require_binary("Xvnc", "tigervnc-standalone-server")
    require_binary("chromium", "chromium")
    edge_port = free_port()
    session_port = free_port()
    env = {
        **os.environ,
        "BATON_EDGE_PORT": str(edge_port),
        "BATON_SESSION_PORT": str(session_port),
        "BATON_DISPLAY_PORT": str(free_port()),
        "BATON_AUTOMATION_PORT": str(free_port()),
        "BATON_API_TOKEN": "launcher-test-token",
        "BATON_DISPLAY_NUMBERS": "600-603",
        "BATON_VNC_PORTS": "18600-18603",
        "BATON_MAX_SLOTS": "2",
        "BATON_DISPLAY_STATE_DIR": str(tmp_path / "display-state"),
        "BATON_SESSION_STATE_DIR": str(tmp_path / "session-state"),
        "BATON_PROFILE_ROOT": str(tmp_path),
        "BATON_LOG_LEVEL": "WARNING",
    }
    with launched_until_ready(env) as (launcher, output):
        console = next((line for line in output if "Baton console:" in line), None)
        assert console is not None, "".join(output)
        assert re.search(rf"http://127\.0\.0\.1:{edge_port}/#token=launcher-test-token", console)
        with urllib.request.urlopen(f"http://127.0.0.1:{edge_port}/healthz", timeout=10) as reply:
            assert reply.status == 200
        request = urllib.request.Request(
            f"http://127.0.0.1:{edge_port}/api/browser-session",
            data=json.dumps({"task": "look", "url": "http://127.0.0.1:9/", "maxSteps": 1}).encode(),
            headers={
                "Authorization": "Bearer launcher-test-token",
                "Content-Type": "application/json",
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            assert reply.status == 201
            assert json.load(reply)["state"] == "AI_CONTROL"
        # The services share a credential the launcher made: a local process
        # without it cannot call them, whatever actor it claims.
        with grpc.insecure_channel(f"127.0.0.1:{session_port}") as channel:
            with pytest.raises(grpc.RpcError) as refused:
                session_pb2_grpc.SessionServiceStub(channel).ListSessions(
                    session_pb2.ListSessionsRequest(
                        actor=session_pb2.Actor(user_id="operator", operator=True)
                    ),
                    timeout=10,
                )
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        started = process_tree(launcher.pid) - {launcher.pid}
        # Four services, an X server and websockify at least, and a browser.
        assert len(started) >= 6
        # A second signal during the clean-up (an impatient Ctrl-C) does not cut it short.
        launcher.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=60) == 0
        assert launcher.stdout is not None
        rest = launcher.stdout.read()
        assert "baton: stopped" in rest, rest
        left = sorted(pid for pid in started if alive(pid))
        assert left == [], f"left running: {left}"
        assert list(tmp_path.glob("baton-profile-*")) == [], rest


def test_a_service_that_cannot_start_stops_the_stack_with_a_message(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BATON_DISPLAY_PORT": str(free_port()),
        "BATON_DISPLAY_NUMBERS": "600-601",
        "BATON_MAX_SLOTS": "5",
        "BATON_DISPLAY_STATE_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "deploy.local_stack"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert "error: display exited with status 2" in result.stderr
    assert "BATON_DISPLAY_NUMBERS holds fewer displays than BATON_MAX_SLOTS" in result.stderr
