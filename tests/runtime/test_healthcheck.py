"""The image's HEALTHCHECK command (services/runtime/healthcheck.py), run as the
container runs it, against real servers: a gRPC server with the shared bootstrap's
health service, and a real edge process over it for `/healthz`."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Mapping

import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.runtime.grpc_server import RunningServer, start_server
from services.runtime.healthcheck import run, service_from_command
from tests.conftest import INTERNAL_TOKEN, free_port

DISPLAY = "baton.display.v1.DisplayService"
SESSION = "baton.session.v1.SessionService"


async def healthcheck(*args: str, env: Mapping[str, str]) -> tuple[int, str]:
    """Exit status and standard error of `python -m services.runtime.healthcheck`."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.runtime.healthcheck",
        *args,
        env={"PATH": os.environ["PATH"], "BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, err.decode()


def no_op(server: grpc.aio.Server) -> None:
    pass


@pytest.fixture
async def grpc_server() -> AsyncIterator[RunningServer]:
    running = await start_server(no_op, [DISPLAY, SESSION], "127.0.0.1:0", INTERNAL_TOKEN)
    yield running
    await running.stop(grace=1)


async def test_a_serving_grpc_service_passes_and_one_not_serving_fails(
    grpc_server: RunningServer,
) -> None:
    env = {"BATON_DISPLAY_PORT": str(grpc_server.port)}
    await grpc_server.health.set(DISPLAY, health_pb2.HealthCheckResponse.SERVING)
    assert await healthcheck("display", env=env) == (0, "")

    await grpc_server.health.set(DISPLAY, health_pb2.HealthCheckResponse.NOT_SERVING)
    status, err = await healthcheck("display", env=env)
    assert status == 1
    assert err == f"unhealthy: {DISPLAY} at 127.0.0.1:{grpc_server.port}: NOT_SERVING\n"


async def test_it_asks_for_the_service_s_own_name(grpc_server: RunningServer) -> None:
    """The session's check asks for SessionService, not the overall status (""),
    which Kubernetes' probes do not ask either."""
    env = {"BATON_SESSION_PORT": str(grpc_server.port)}
    await grpc_server.health.set("", health_pb2.HealthCheckResponse.SERVING)
    await grpc_server.health.set(SESSION, health_pb2.HealthCheckResponse.NOT_SERVING)
    status, err = await healthcheck("session", env=env)
    assert (status, err) == (
        1,
        f"unhealthy: {SESSION} at 127.0.0.1:{grpc_server.port}: NOT_SERVING\n",
    )
    await grpc_server.health.set(SESSION, health_pb2.HealthCheckResponse.SERVING)
    assert await healthcheck("session", env=env) == (0, "")


async def test_nothing_listening_is_one_line_without_a_traceback() -> None:
    port = free_port()
    status, err = await healthcheck("automation", env={"BATON_AUTOMATION_PORT": str(port)})
    assert status == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"unhealthy: baton.automation.v1.AutomationService at 127.0.0.1:{port}: ")
    assert "UNAVAILABLE" in err


async def test_bad_settings_and_bad_arguments_are_one_line() -> None:
    status, err = await healthcheck("display", env={"BATON_DISPLAY_PORT": "fifty"})
    assert (status, err) == (1, "unhealthy: BATON_DISPLAY_PORT='fifty' is not an integer\n")
    status, err = await healthcheck("mailer", env={})
    assert status == 1 and err.startswith("unhealthy: unknown service 'mailer'")


async def test_the_edge_passes_only_while_its_session_service_is_ready(
    grpc_server: RunningServer,
) -> None:
    """A real edge process: /healthz answers 200 while the session service it
    dials is SERVING (overall), 503 otherwise."""
    await grpc_server.health.set("", health_pb2.HealthCheckResponse.SERVING)
    port = free_port()
    env = {
        "BATON_EDGE_PORT": str(port),
        "BATON_SESSION_ADDRESS": f"127.0.0.1:{grpc_server.port}",
        "BATON_API_TOKEN": "operator-token-for-the-healthcheck-test",
        "HOME": os.environ.get("HOME", "/tmp"),
    }
    edge = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.edge",
        env={"PATH": os.environ["PATH"], "BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        passed = False
        while not passed:
            assert edge.returncode is None, "the edge exited"
            status, err = await healthcheck("edge", env=env)
            passed = status == 0
            if not passed:
                # Until it listens: refused, one line.
                assert "Connection refused" in err and err.count("\n") == 1, err
                await asyncio.sleep(0.2)
        await grpc_server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        status, err = await healthcheck("edge", env=env)
        assert (status, err) == (1, f"unhealthy: GET http://127.0.0.1:{port}/healthz: HTTP 503\n")
    finally:
        edge.terminate()
        await asyncio.wait_for(edge.wait(), 10)


def test_without_an_argument_the_service_is_the_one_pid_1_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    python = "/opt/baton/.venv/bin/python"
    assert service_from_command([python, "-m", "services.display"]) == "display"
    assert service_from_command([python, "-m", "services.edge"]) == "edge"
    assert service_from_command([python, "-m", "deploy.pod_cost"]) is None
    assert service_from_command(["etcd", "--name=etcd-0"]) is None
    # A port nothing listens on: the check ran for the display (its message).
    port = free_port()
    env = {"BATON_DISPLAY_PORT": str(port), "BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value}
    assert run([], env, lambda: [python, "-m", "services.display"]) == 1
    assert capsys.readouterr().err.startswith(f"unhealthy: {DISPLAY} at 127.0.0.1:{port}: ")


def test_unknown_pid_1_says_what_to_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert run([], {}, lambda: ["sleep", "infinity"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("unhealthy: cannot tell which service this container runs")
    assert "pass one of display, automation, session, edge" in err


async def test_the_edge_check_is_given_up_in_time() -> None:
    """Bounded: an edge that accepts and never answers fails within the timeout."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        status, err = await asyncio.wait_for(
            healthcheck("edge", env={"BATON_EDGE_PORT": str(port)}), 20
        )
        assert status == 1 and "timed out" in err and err.count("\n") == 1, err
        assert held, "the check connected"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
