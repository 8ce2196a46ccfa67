"""Two session-service replicas sharing one real etcd (issue 10, items 3 and 4;
issue 12, item 5): the handoff fence and the per-user quota hold across them.

Real gRPC servers on loopback, a real etcd, twin worker ports shared by both
replicas (one worker host, as two replicas of a cluster would reach it).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from baton.automation.v1 import automation_pb2
from baton.session.v1 import session_pb2, session_pb2_grpc
from services.runtime.grpc_server import RunningServer
from services.runtime.internal_auth import token_interceptors
from services.session.etcd_store import EtcdStore
from services.session.server import start_session_server
from services.session.settings import SessionSettings
from services.session.webhook_delivery import WebhookSettings
from tests.conftest import INTERNAL_TOKEN
from tests.session.twins import AutomationTwin, twin_worker
from tests.session.webhook_receiver import verify, webhook_receiver

ALICE = session_pb2.Actor(user_id="alice")
NO_WEBHOOKS = WebhookSettings()
WEBHOOK_SECRET = "whsec-replicas-0123456789"
QUOTA = 1


@dataclass
class Replica:
    running: RunningServer
    channel: grpc.aio.Channel
    stub: session_pb2_grpc.SessionServiceAsyncStub
    stopped: bool = False

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.channel.close(None)
            await self.running.stop()


@dataclass
class Replicas:
    one: Replica
    two: Replica
    automation: AutomationTwin


@pytest.fixture
async def replicas(etcd_endpoint: str) -> AsyncIterator[Replicas]:
    async with two_replicas(etcd_endpoint) as both:
        yield both


@contextlib.asynccontextmanager
async def two_replicas(
    etcd_endpoint: str, webhook: WebhookSettings = NO_WEBHOOKS
) -> AsyncIterator[Replicas]:
    worker, _, automation = twin_worker()
    # A fresh session prefix per test: the etcd is shared with the other tests.
    prefix = f"/baton-test/{uuid.uuid4().hex}/"
    settings = SessionSettings(
        internal_token=INTERNAL_TOKEN,
        etcd_endpoints=(etcd_endpoint,),
        control_fence_timeout_s=10,
        max_sessions_per_user=QUOTA,
        webhook=webhook,
    )
    started: list[Replica] = []

    async def start() -> Replica:
        store = await EtcdStore.connect([etcd_endpoint], prefix=prefix)
        running = await start_session_server(settings, worker=worker, store=store)
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{running.port}", interceptors=token_interceptors(INTERNAL_TOKEN)
        )
        stub = session_pb2_grpc.SessionServiceStub(channel)
        replica = Replica(running, channel, stub)
        started.append(replica)
        return replica

    try:
        yield Replicas(await start(), await start(), automation)
    finally:
        for feed in automation.feeds.values():
            feed.put_nowait(None)
        for replica in started:
            await replica.stop()


async def change(replica: Replica, session_id: str, action: int) -> session_pb2.Session:
    response = await replica.stub.ChangeControl(
        session_pb2.ChangeControlRequest(
            session_id=session_id,
            actor=ALICE,
            action=action,  # type: ignore[arg-type]
        )
    )
    return response.session


async def create(replica: Replica) -> session_pb2.Session:
    response = await replica.stub.CreateSession(
        session_pb2.CreateSessionRequest(actor=ALICE, task="look", url="http://127.0.0.1:9/")
    )
    return response.session


async def held_by_the_fence(
    replicas: Replicas, reporter: Replica, changer: Replica, acknowledger: Replica
) -> None:
    """A viewer reported to `reporter`; control returned through `changer`:
    the agent resumes only once the edge acknowledged through `acknowledger`."""
    session = await create(reporter)
    await reporter.stub.RecordActivity(
        session_pb2.RecordActivityRequest(
            session_id=session.id,
            kind=session_pb2.ACTIVITY_KIND_VIEWER_JOINED,
            edge_id="edge-1",
        )
    )
    taken = await change(changer, session.id, session_pb2.CONTROL_ACTION_TAKE_CONTROL)
    resumed = ("resume", session.id)
    resumes_before = replicas.automation.calls.count(resumed)
    returning = asyncio.create_task(
        change(changer, session.id, session_pb2.CONTROL_ACTION_RETURN_CONTROL)
    )
    try:
        # Positive marker: the return is committed (the path is live), yet the
        # agent waits for the edge that holds a viewer.
        async def committed() -> None:
            while True:
                got = await acknowledger.stub.GetSession(
                    session_pb2.GetSessionRequest(session_id=session.id, actor=ALICE)
                )
                if got.session.version > taken.version:
                    return
                await asyncio.sleep(0.02)

        await asyncio.wait_for(committed(), 5)
        await asyncio.sleep(0.5)
        assert not returning.done()
        assert replicas.automation.calls.count(resumed) == resumes_before
        # An acknowledgement of an older version does not count.
        await acknowledger.stub.AcknowledgeControl(
            session_pb2.AcknowledgeControlRequest(
                session_id=session.id, edge_id="edge-1", version=taken.version
            )
        )
        await asyncio.sleep(0.3)
        assert not returning.done()
        await acknowledger.stub.AcknowledgeControl(
            session_pb2.AcknowledgeControlRequest(
                session_id=session.id, edge_id="edge-1", version=taken.version + 1
            )
        )
        returned = await asyncio.wait_for(returning, 3)
    finally:
        returning.cancel()
    assert returned.version == taken.version + 1
    assert replicas.automation.calls.count(resumed) == resumes_before + 1


async def test_a_resume_on_one_replica_waits_for_an_edge_that_reported_to_the_other(
    replicas: Replicas,
) -> None:
    await held_by_the_fence(replicas, replicas.one, replicas.two, replicas.one)


async def test_the_fence_outlives_the_replica_the_edge_reported_to(
    replicas: Replicas,
) -> None:
    # The edge's viewer report went to replica one, which then stops for good
    # (its etcd connection closed): the fence on replica two still knows it.
    session = await create(replicas.two)
    await replicas.one.stub.RecordActivity(
        session_pb2.RecordActivityRequest(
            session_id=session.id,
            kind=session_pb2.ACTIVITY_KIND_VIEWER_JOINED,
            edge_id="edge-1",
        )
    )
    await replicas.one.stop()
    taken = await change(replicas.two, session.id, session_pb2.CONTROL_ACTION_TAKE_CONTROL)
    returning = asyncio.create_task(
        change(replicas.two, session.id, session_pb2.CONTROL_ACTION_RETURN_CONTROL)
    )
    try:
        await asyncio.sleep(0.5)
        assert not returning.done()
        assert ("resume", session.id) not in replicas.automation.calls
        await replicas.two.stub.AcknowledgeControl(
            session_pb2.AcknowledgeControlRequest(
                session_id=session.id, edge_id="edge-1", version=taken.version + 1
            )
        )
        returned = await asyncio.wait_for(returning, 3)
    finally:
        returning.cancel()
    assert returned.version == taken.version + 1
    assert ("resume", session.id) in replicas.automation.calls


async def test_concurrent_creates_over_both_replicas_never_pass_the_quota(
    replicas: Replicas,
) -> None:
    attempts = 12
    for replica in (replicas.one, replicas.two):
        # Both replicas reached once, so the creates below really race.
        await replica.stub.ListSessions(session_pb2.ListSessionsRequest(actor=ALICE))
    results = await asyncio.gather(
        *(create(replicas.one if i % 2 else replicas.two) for i in range(attempts)),
        return_exceptions=True,
    )
    created = [r for r in results if isinstance(r, session_pb2.Session)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(created) == QUOTA, results
    assert len(refused) == attempts - QUOTA
    assert {r.code() for r in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    listed = await replicas.one.stub.ListSessions(session_pb2.ListSessionsRequest(actor=ALICE))
    assert len(listed.sessions) == QUOTA
    # Once one ends, the user may create again (the lock was given back).
    await replicas.two.stub.EndSession(
        session_pb2.EndSessionRequest(session_id=created[0].id, actor=ALICE)
    )
    await create(replicas.one)


async def test_take_control_racing_on_both_replicas_has_exactly_one_winner(
    replicas: Replicas,
) -> None:
    """Control changes are serialized through the store, not a replica's lock: the
    same take_control, at the same expected version, sent to both replicas at once,
    wins once; the agent is paused before the winner's USER_CONTROL is committed."""
    for round_ in range(5):
        session = await create(replicas.one)
        calls_before = len(replicas.automation.calls)
        requests = [
            replica.stub.ChangeControl(
                session_pb2.ChangeControlRequest(
                    session_id=session.id,
                    actor=ALICE,
                    action=session_pb2.CONTROL_ACTION_TAKE_CONTROL,
                    expected_version=session.version,
                )
            )
            for replica in (replicas.one, replicas.two)
        ]
        results = await asyncio.gather(*requests, return_exceptions=True)
        won = [r for r in results if isinstance(r, session_pb2.ChangeControlResponse)]
        lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(won) == 1 and len(lost) == 1, (round_, results)
        assert lost[0].code() in (
            grpc.StatusCode.ABORTED,
            grpc.StatusCode.FAILED_PRECONDITION,
        ), lost[0]
        assert won[0].session.state == session_pb2.CONTROL_STATE_USER_CONTROL
        pauses = [c for c in replicas.automation.calls[calls_before:] if c == ("pause", session.id)]
        assert len(pauses) >= 1, "USER_CONTROL without the agent paused"
        stored = await replicas.two.stub.GetSession(
            session_pb2.GetSessionRequest(session_id=session.id, actor=ALICE)
        )
        assert stored.session.version == won[0].session.version
        await replicas.two.stub.EndSession(
            session_pb2.EndSessionRequest(session_id=session.id, actor=ALICE)
        )


async def test_each_webhook_event_is_sent_once_by_two_replicas(etcd_endpoint: str) -> None:
    """Issue 13, part 4: both replicas send webhooks to one receiver; a take_control
    raced on both, and task events followed by one of them, each arrive once."""
    async with webhook_receiver() as receiver:
        webhook = WebhookSettings(url=receiver.url, secret=WEBHOOK_SECRET)
        async with two_replicas(etcd_endpoint, webhook) as replicas:
            session = await create(replicas.one)
            feed = replicas.automation.feed(session.id)
            feed.put_nowait(
                automation_pb2.StartTaskResponse(
                    seq=1, user_requested=automation_pb2.UserRequested(reason="sign in")
                )
            )
            results = await asyncio.gather(
                *(
                    replica.stub.ChangeControl(
                        session_pb2.ChangeControlRequest(
                            session_id=session.id,
                            actor=ALICE,
                            action=session_pb2.CONTROL_ACTION_TAKE_CONTROL,
                        )
                    )
                    for replica in (replicas.one, replicas.two)
                ),
                return_exceptions=True,
            )
            assert any(isinstance(r, session_pb2.ChangeControlResponse) for r in results)
            await replicas.two.stub.EndSession(
                session_pb2.EndSessionRequest(session_id=session.id, actor=ALICE)
            )

            def types() -> list[str]:
                return [e["type"] for e in receiver.delivered() if e["sessionId"] == session.id]

            await receiver.wait_until(lambda: "session.ended" in types())
            # Anything sent twice would have arrived by now (deliveries are immediate).
            await asyncio.sleep(0.5)
    assert sorted(types()) == sorted(
        [
            "session.control_changed",  # ready
            "session.waiting_for_user",
            "session.control_changed",  # take_control: one winner, one sender
            "session.ended",
        ]
    ), types()
    assert all(verify(WEBHOOK_SECRET, r.signature, r.body) for r in receiver.requests)
