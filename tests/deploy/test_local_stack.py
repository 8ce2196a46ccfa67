"""`make run`'s launcher: the whole stack as separate processes, stopped cleanly."""

from __future__ import annotations

import json
import os
import pwd
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
from deploy.service_user import DEFAULT_USER
from tests.conftest import free_port, require_binary
from tests.deploy.stack_process import (
    alive,
    cmdline,
    launched_until_ready,
    process_tree,
    real_uid,
)

# services/automation/settings.py, BATON_BROWSER_UID_BASE.
BROWSER_UID_BASE = 300000


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
        "BATON_PROFILE_ROOT": str(tmp_path / "profiles"),
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
        # Started as root, it starts nothing as root: the services and their X
        # and VNC servers run as user baton, each browser as its own uid
        # (deploy/service_user.py, services/automation/browser_user.py).
        uids = {pid: real_uid(pid) for pid in started}
        services = {pid for pid in started if cmdline(pid)[1:2] == ["-m"]}
        assert {cmdline(pid)[2] for pid in services} >= {
            f"services.{name}" for name in ("display", "automation", "session", "edge")
        }
        baton = pwd.getpwnam(DEFAULT_USER).pw_uid
        assert {uids[pid] for pid in services} == {baton}
        browsers = {pid for pid in started if "chromium" in " ".join(cmdline(pid)[:1])}
        assert browsers, "no browser started"
        assert all(BROWSER_UID_BASE + 600 <= uids[pid] < BROWSER_UID_BASE + 604 for pid in browsers)
        assert 0 not in uids.values()
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
        assert list((tmp_path / "profiles").glob("baton-profile-*")) == [], rest


def test_a_service_that_cannot_start_stops_the_stack_with_a_message(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BATON_DISPLAY_PORT": str(free_port()),
        "BATON_DISPLAY_NUMBERS": "600-601",
        "BATON_MAX_SLOTS": "5",
        "BATON_DISPLAY_STATE_DIR": str(tmp_path / "display-state"),
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


def test_as_root_what_the_service_user_cannot_reach_stops_the_launch_in_one_line_each(
    tmp_path: Path,
) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not read by anyone but root")
    key.chmod(0o600)
    cert = tmp_path / "private" / "cert.pem"
    cert.parent.mkdir(mode=0o700)
    cert.write_text("behind a directory only root goes through")
    taken = tmp_path / "taken"
    taken.mkdir(mode=0o700)
    env = {
        **os.environ,
        "BATON_TLS_CERT": str(cert),
        "BATON_TLS_KEY": str(key),
        "BATON_PROFILE_ROOT": str(taken),
        "BATON_DISPLAY_STATE_DIR": str(tmp_path / "made" / "display-state"),
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
    assert "error: the services run as user baton, but:" in result.stderr
    assert f"BATON_TLS_KEY={key} is not readable by it" in result.stderr
    assert f"BATON_TLS_CERT={cert} is out of its reach" in result.stderr
    assert f"BATON_PROFILE_ROOT={taken} is not writable by it" in result.stderr
    # Nothing started, and a named directory that was missing is made for the user.
    assert "ready" not in result.stdout
    made = tmp_path / "made" / "display-state"
    assert made.stat().st_uid == pwd.getpwnam(DEFAULT_USER).pw_uid
    assert "BATON_DISPLAY_STATE_DIR" not in result.stderr

    unknown = subprocess.run(
        [sys.executable, "-m", "deploy.local_stack"],
        env={**env, "BATON_RUN_AS": "no-such-user"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 2
    assert "error: BATON_RUN_AS=no-such-user: no such user" in unknown.stderr
