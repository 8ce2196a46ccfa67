"""Issue 12, findings 2 and 5 at the session service (real gRPC on loopback,
twin workers, the memory store and a real etcd).

Secrets: a fill value or typed text reaches automation's StartTask and nothing
else: not GetSession, ListSessions, WatchSession, the raw store or the logs.
Starvation: bounded fields, no record of a refused create, a per-user session
quota, and ListSessions in pages that stay under gRPC's 4 MiB limit.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aetcd
import grpc
import pytest

from baton.automation.v1 import automation_pb2
from baton.session.v1 import session_pb2, session_pb2_grpc
from services.runtime.etcd_client import parse_endpoint
from services.runtime.internal_auth import token_interceptors
from services.runtime.limits import (
    MAX_STEP_FIELD_BYTES,
    MAX_STEPS,
    MAX_STEPS_BYTES,
    MAX_TASK_BYTES,
)
from services.session import codec
from services.session.etcd_store import EtcdStore
from services.session.server import start_session_server
from services.session.settings import SessionSettings
from services.session.store import MemoryStore, SessionStore
from tests.conftest import INTERNAL_TOKEN
from tests.session.twins import AutomationTwin, DisplayTwin, twin_worker

SECRET = "hunter2-Tr0ub4dor&3"
TYPED = "typed-otp-493817"
ALICE = session_pb2.Actor(user_id="alice")
BOB = session_pb2.Actor(user_id="bob")
OPERATOR = session_pb2.Actor(operator=True)
GRPC_MAX_MESSAGE = 4 * 1024 * 1024


@dataclass
class Service:
    stub: session_pb2_grpc.SessionServiceAsyncStub
    store: SessionStore
    display: DisplayTwin
    automation: AutomationTwin


@pytest.fixture
async def service_factory() -> AsyncIterator[object]:
    stops = []

    async def start(store: SessionStore, settings: SessionSettings | None = None) -> Service:
        worker, display, automation = twin_worker()
        running = await start_session_server(
            settings
            or SessionSettings(
                internal_token=INTERNAL_TOKEN,
            ),
            worker=worker,
            store=store,
        )
        # Large pages are allowed to arrive whole (the server keeps them under 4 MiB).
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{running.port}",
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
            interceptors=token_interceptors(INTERNAL_TOKEN),
        )

        async def stop() -> None:
            for feed in automation.feeds.values():
                feed.put_nowait(None)
            await channel.close(None)
            await running.stop(grace=1)

        stops.append(stop)
        return Service(session_pb2_grpc.SessionServiceStub(channel), store, display, automation)

    yield start
    for stop in stops:
        await stop()


def secret_steps() -> list[automation_pb2.Step]:
    return [
        automation_pb2.Step(goto=automation_pb2.GotoAction(url="http://127.0.0.1:9/login")),
        # A selector that does not say "password": the rule cannot rely on names.
        automation_pb2.Step(fill=automation_pb2.FillAction(selector="#field-2", value=SECRET)),
        automation_pb2.Step(type=automation_pb2.TypeAction(text=TYPED)),
        automation_pb2.Step(click=automation_pb2.ClickAction(selector="#sign-in")),
    ]


async def raw_store_bytes(store: SessionStore, etcd_endpoint: str | None) -> bytes:
    """Everything the store holds, as stored."""
    if isinstance(store, MemoryStore):
        raw = b""
        for stored in await store.list_all():
            # The record and its step log (store.py).
            full = await store.get_full(stored.session.id)
            steps = full[0].steps if full else ()
            raw += codec.encode(stored.session) + b"".join(map(codec.encode_step, steps))
        return raw
    assert isinstance(store, EtcdStore) and etcd_endpoint
    host, port = parse_endpoint(etcd_endpoint)
    client = aetcd.Client(host=host, port=port)
    await client.connect()
    try:
        # Every key in the etcd, not only our prefix.
        result = await client.get_prefix(b"/")
        return b"".join(kv.key + kv.value for kv in result)
    finally:
        await client.close()


@pytest.mark.parametrize("kind", ["memory", "etcd"])
async def test_fill_values_and_typed_text_are_never_kept_or_returned(
    kind: str,
    service_factory: object,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint = None
    store: SessionStore
    if kind == "memory":
        store = MemoryStore()
    else:
        endpoint = request.getfixturevalue("etcd_endpoint")
        store = await EtcdStore.connect([endpoint], prefix=f"/baton-test/{uuid.uuid4().hex}/")
    service: Service = await service_factory(store)  # type: ignore[operator]
    created = await service.stub.CreateSession(
        session_pb2.CreateSessionRequest(actor=ALICE, task="sign in", steps=secret_steps())
    )
    session_id = created.session.id
    # Positive marker: automation (and through it the browser) got the values.
    started = service.automation.started[session_id]
    assert started.steps[1].fill.value == SECRET
    assert started.steps[2].type.text == TYPED

    watch = service.stub.WatchSession(
        session_pb2.WatchSessionRequest(session_id=session_id, actor=ALICE)
    )
    first = await watch.read()
    service.automation.feed(session_id).put_nowait(
        automation_pb2.StartTaskResponse(
            step=automation_pb2.StepEvent(index=1, action="fill", description="fill #field-2")
        )
    )
    second = await watch.read()
    watch.cancel()
    assert isinstance(first, session_pb2.WatchSessionResponse) and first.HasField("created")
    assert isinstance(second, session_pb2.WatchSessionResponse) and second.HasField("step")
    got = await service.stub.GetSession(
        session_pb2.GetSessionRequest(session_id=session_id, actor=ALICE)
    )
    listed = await service.stub.ListSessions(session_pb2.ListSessionsRequest(actor=OPERATOR))
    answers = [message.SerializeToString() for message in (created, first, second, got, listed)]
    # The steps are still there, with the values replaced.
    assert got.session.task.steps[1].fill.value == "[redacted]"
    assert got.session.task.steps[1].fill.selector == "#field-2"
    assert got.session.task.steps[2].type.text == "[redacted]"
    raw = await raw_store_bytes(store, endpoint)
    assert session_id.encode() in raw  # the store does hold the session
    for secret in (SECRET, TYPED):
        for answer in answers:
            assert secret.encode() not in answer
        assert secret.encode() not in raw
        assert secret not in caplog.text
    if kind == "etcd":
        await store.close()


async def test_seventy_huge_tasks_are_refused_and_do_not_break_listing(
    service_factory: object,
) -> None:
    store = MemoryStore()
    service: Service = await service_factory(store)  # type: ignore[operator]
    huge = "x" * 60_000
    for _ in range(70):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await service.stub.CreateSession(
                session_pb2.CreateSessionRequest(actor=ALICE, task=huge, url="http://127.0.0.1:9/")
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == (
            f"task is 60000 bytes; the limit is {MAX_TASK_BYTES} bytes"
        )
    assert await store.list_all() == []
    assert service.display.slots == {}
    listed = await service.stub.ListSessions(session_pb2.ListSessionsRequest(actor=OPERATOR))
    assert list(listed.sessions) == []


@pytest.mark.parametrize(
    ("field", "request_fields"),
    [
        ("url", {"url": "http://127.0.0.1/" + "u" * 3000}),
        ("steps", {"url": "http://127.0.0.1/", "steps": [automation_pb2.Step()] * (MAX_STEPS + 1)}),
        (
            "steps[0].selector",
            {
                "steps": [
                    automation_pb2.Step(
                        click=automation_pb2.ClickAction(selector="s" * (MAX_STEP_FIELD_BYTES + 1))
                    )
                ]
            },
        ),
        ("viewport", {"url": "http://127.0.0.1/", "viewport": {"width": 100_000, "height": 720}}),
        (
            "steps",
            {
                "steps": [
                    automation_pb2.Step(click=automation_pb2.ClickAction(selector="s" * 2000))
                ]
                * 40
            },
        ),
        ("actor.user_id", {"url": "http://127.0.0.1/", "actor": {"user_id": "u" * 300}}),
    ],
)
async def test_each_bound_names_its_field(
    field: str, request_fields: dict[str, object], service_factory: object
) -> None:
    service: Service = await service_factory(MemoryStore())  # type: ignore[operator]
    fields = {"actor": ALICE, "task": "t", **request_fields}
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.stub.CreateSession(session_pb2.CreateSessionRequest(**fields))  # type: ignore[arg-type]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith(field + " "), refused.value.details()


async def test_two_thousand_refused_creates_leave_no_record(service_factory: object) -> None:
    store = MemoryStore()
    service: Service = await service_factory(store)  # type: ignore[operator]
    kept = await service.stub.CreateSession(
        session_pb2.CreateSessionRequest(actor=BOB, task="t", url="http://127.0.0.1:9/")
    )
    service.display.capacity = len(service.display.slots)  # the host is now full
    before = len(await store.list_all())

    async def refused(index: int) -> grpc.StatusCode:
        # Capacity, validation and (for alice's 5th) nothing else: all refused.
        url = "http://127.0.0.1:9/" if index % 2 else "not a url"
        request = session_pb2.CreateSessionRequest(actor=ALICE, task="t", url=url)
        if index % 2 == 0:
            request.max_steps = -1
        try:
            await service.stub.CreateSession(request)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    codes: list[grpc.StatusCode] = []
    for start in range(0, 2000, 100):
        codes += await asyncio.gather(*(refused(i) for i in range(start, start + 100)))
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 1000
    assert codes.count(grpc.StatusCode.INVALID_ARGUMENT) == 1000
    assert len(await store.list_all()) == before == 1
    listed = await service.stub.ListSessions(session_pb2.ListSessionsRequest(actor=OPERATOR))
    assert [s.id for s in listed.sessions] == [kept.session.id]


async def test_a_user_over_the_session_quota_is_refused_while_others_create(
    service_factory: object,
) -> None:
    settings = SessionSettings(internal_token=INTERNAL_TOKEN, max_sessions_per_user=3)
    service: Service = await service_factory(MemoryStore(), settings)  # type: ignore[operator]

    async def create(actor: session_pb2.Actor) -> session_pb2.Session:
        answer = await service.stub.CreateSession(
            session_pb2.CreateSessionRequest(actor=actor, task="t", url="http://127.0.0.1:9/")
        )
        return answer.session

    alice = [await create(ALICE) for _ in range(3)]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await create(ALICE)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "BATON_MAX_SESSIONS_PER_USER=3" in (refused.value.details() or "")
    assert ("retry-after", "30") in tuple(refused.value.trailing_metadata() or ())  # type: ignore[comparison-overlap]
    await create(BOB)  # another user is not starved
    # Concurrent creates cannot slip past the quota together.
    carol = session_pb2.Actor(user_id="carol")
    results = await asyncio.gather(*(create(carol) for _ in range(6)), return_exceptions=True)
    assert sum(isinstance(result, session_pb2.Session) for result in results) == 3
    for _ in range(4):
        await create(OPERATOR)  # operators are exempt
    # Ending a session frees a place.
    await service.stub.EndSession(
        session_pb2.EndSessionRequest(session_id=alice[0].id, actor=ALICE)
    )
    await create(ALICE)


async def test_pages_list_every_session_once(service_factory: object) -> None:
    settings = SessionSettings(internal_token=INTERNAL_TOKEN, max_sessions_per_user=0)
    service: Service = await service_factory(MemoryStore(), settings)  # type: ignore[operator]
    service.display.capacity = 1000
    created = set()
    for index in range(230):
        actor = ALICE if index % 3 else BOB
        answer = await service.stub.CreateSession(
            session_pb2.CreateSessionRequest(actor=actor, task="t", url="http://127.0.0.1:9/")
        )
        created.add(answer.session.id)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await service.stub.ListSessions(
            session_pb2.ListSessionsRequest(actor=OPERATOR, page_size=70, page_token=token)
        )
        pages += 1
        assert len(page.sessions) <= 70
        seen += [s.id for s in page.sessions]
        token = page.next_page_token
        if not token:
            break
    assert pages == 4
    assert len(seen) == len(set(seen)) == 230
    assert set(seen) == created
    default = await service.stub.ListSessions(session_pb2.ListSessionsRequest(actor=OPERATOR))
    assert len(default.sessions) == 100 and default.next_page_token
    huge = await service.stub.ListSessions(
        session_pb2.ListSessionsRequest(actor=OPERATOR, page_size=1_000_000)
    )
    assert len(huge.sessions) == 230 and not huge.next_page_token
    for bad in (
        session_pb2.ListSessionsRequest(actor=OPERATOR, page_size=-1),
        session_pb2.ListSessionsRequest(actor=OPERATOR, page_token="not-a-token!"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await service.stub.ListSessions(bad)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_list_of_maximal_sessions_is_a_page_of_small_summaries(
    service_factory: object,
) -> None:
    settings = SessionSettings(internal_token=INTERNAL_TOKEN, max_sessions_per_user=0)
    service: Service = await service_factory(MemoryStore(), settings)  # type: ignore[operator]
    field = "s" * MAX_STEP_FIELD_BYTES
    step = automation_pb2.Step(select=automation_pb2.SelectAction(selector=field, value=field))
    steps = [step] * (MAX_STEPS_BYTES // step.ByteSize())
    for _ in range(80):  # about 5.3 MB of stored sessions in all
        created = await service.stub.CreateSession(
            session_pb2.CreateSessionRequest(
                actor=ALICE, task="t" * MAX_TASK_BYTES, url="http://127.0.0.1:9/", steps=steps
            )
        )
    page = await service.stub.ListSessions(
        session_pb2.ListSessionsRequest(actor=OPERATOR, page_size=500)
    )
    # Summaries leave the steps out (GetSession has them): all 80 in one page.
    assert (len(page.sessions), page.next_page_token) == (80, "")
    assert page.ByteSize() < GRPC_MAX_MESSAGE // 8
    assert all(not s.task.steps and s.ByteSize() < 8 * 1024 for s in page.sessions)
    got = await service.stub.GetSession(
        session_pb2.GetSessionRequest(session_id=created.session.id, actor=ALICE)
    )
    assert len(got.session.task.steps) == len(steps)
