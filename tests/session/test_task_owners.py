"""Task ownership and adoption across session service replicas, on a real etcd.

Two orchestrators share one etcd store and one worker host (twins behind the
worker ports). One follows a task and dies without letting go; the other
claims the task when the dead one's lease expires and reads on after the last
event applied: no step lost, none applied twice. The end-to-end version, with
real processes killed, is in tests/cluster.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from baton.automation.v1 import automation_pb2
from services.runtime.etcd_client import EtcdConnection, connect_first
from services.session.etcd_store import EtcdStore
from services.session.model import TaskStatus
from services.session.orchestrator import SessionOrchestrator
from services.session.settings import SessionSettings
from services.session.task_owners import EtcdTaskOwners
from services.session.workers import StaticWorkerDirectory, WorkerHost
from tests.conftest import INTERNAL_TOKEN, eventually
from tests.session.test_orchestrator import (
    ALICE,
    OPERATOR,
    SPEC,
    running_event,
    step_event,
)
from tests.session.twins import AutomationTwin, DisplayTwin

TTL_S = 2


async def crash(owners: EtcdTaskOwners) -> None:
    """What a kill -9 leaves: no keep-alive, no release, no revoke; the lease
    expires on its own after its TTL."""
    for task in owners._tasks:
        task.cancel()
    owners._stopped = True
    owners._lease = None


@pytest.fixture
async def store(etcd_endpoint: str) -> AsyncIterator[EtcdStore]:
    # A prefix of its own: the etcd is shared with the other tests of the run.
    client = await connect_first([etcd_endpoint])
    yield EtcdStore(client, prefix=f"/test-{uuid.uuid4().hex}/sessions/")
    await client.close()


async def owners(etcd_endpoint: str) -> EtcdTaskOwners:
    """A replica's task owners on a connection of its own (closed with it here)."""
    etcd = await EtcdConnection.open([etcd_endpoint])
    started = EtcdTaskOwners(etcd, TTL_S)
    await started.start()
    close = started.close

    async def close_both() -> None:
        await close()
        await etcd.close()

    started.close = close_both  # type: ignore[method-assign]
    return started


async def test_one_claim_wins_and_a_dead_replicas_claims_are_released(
    etcd_endpoint: str,
) -> None:
    a, b = await owners(etcd_endpoint), await owners(etcd_endpoint)
    released = b.released()
    try:
        first, second = f"s-{uuid.uuid4().hex}", f"s-{uuid.uuid4().hex}"
        assert await a.claim(first)
        assert not await b.claim(first)
        assert await a.claim(second)
        # Let go: the other replica hears of it at once and may claim.
        await a.release(first)
        assert await asyncio.wait_for(anext(released), 2) == first
        assert await b.claim(first)
        # Releasing what is not ours does nothing.
        await a.release(first)
        assert not await a.claim(first)
        # A replica that dies holding a claim: released when its lease expires.
        died = time.monotonic()
        await crash(a)
        assert await asyncio.wait_for(anext(released), TTL_S + 3) == second
        assert time.monotonic() - died <= TTL_S + 2
        assert await b.claim(second)
    finally:
        await released.aclose()
        await b.close()
        await a.close()


async def test_a_task_followed_by_a_replica_that_died_is_followed_by_another(
    etcd_endpoint: str, store: EtcdStore
) -> None:
    display, automation = DisplayTwin(), AutomationTwin()
    directory = StaticWorkerDirectory(WorkerHost("twin", "d", "a", display, automation))
    settings = SessionSettings(internal_token=INTERNAL_TOKEN, idle_timeout_s=60)
    owners_a, owners_b = await owners(etcd_endpoint), await owners(etcd_endpoint)
    a = SessionOrchestrator(store, directory, settings, owners=owners_a)
    b = SessionOrchestrator(store, directory, settings, owners=owners_b)
    a.start_background()
    b.start_background()
    try:
        session = await a.create(ALICE, SPEC)
        feed = automation.feed(session.id)
        await feed.put(running_event())
        await feed.put(step_event(0, automation_pb2.STEP_STATUS_SUCCEEDED))
        await eventually(lambda: automation.logs.get(session.id, []) != [] and feed.empty())

        async def applied() -> int:
            return (await b.get(OPERATOR, session.id)).task.events_applied

        deadline = time.monotonic() + 5
        while await applied() < 2:
            assert time.monotonic() < deadline, "replica a never applied the first events"
            await asyncio.sleep(0.02)
        assert automation.calls.count(("attach", session.id)) == 0

        # Replica a dies; the task goes on in automation meanwhile.
        await crash(owners_a)
        await a.close()
        await feed.put(step_event(1, automation_pb2.STEP_STATUS_SUCCEEDED))
        died = time.monotonic()
        # b claims the task when a's lease expires, and reads on after event 2.
        while ("attach", session.id) not in automation.calls:
            assert time.monotonic() - died < TTL_S + 3, "nobody followed the task again"
            await asyncio.sleep(0.05)
        await feed.put(
            automation_pb2.StartTaskResponse(
                status_changed=automation_pb2.TaskStatusChanged(
                    status=automation_pb2.TASK_STATUS_COMPLETED, steps_completed=2
                )
            )
        )
        deadline = time.monotonic() + 5
        while (done := await b.get(OPERATOR, session.id)).task.status is not TaskStatus.COMPLETED:
            assert time.monotonic() < deadline, f"the task never completed: {done.task}"
            await asyncio.sleep(0.02)
        logged = (await b.get_full(OPERATOR, session.id)).steps
        assert (done.step_count, [e.index for e in logged]) == (2, [0, 1])
        assert (done.task.steps_completed, done.task.events_applied) == (2, 4)
        assert automation.calls.count(("attach", session.id)) == 1
    finally:
        await b.close()
        await owners_b.close()
        await owners_a.close()


async def test_a_claim_under_a_lapsed_lease_takes_a_new_lease_and_succeeds(
    etcd_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The lease went away unseen (here: revoked behind the replica's back; in the
    cluster, an etcd leader killed while the keep-alive was moving to another
    member): the next claim takes a new lease at once instead of failing until the
    keep-alive notices, a third of a long TTL later."""
    etcd = await EtcdConnection.open([etcd_endpoint])
    replica = EtcdTaskOwners(etcd, ttl_s=60)
    await replica.start()
    try:
        lapsed = replica._lease
        assert lapsed is not None
        other = await connect_first([etcd_endpoint])
        await other.revoke_lease(lapsed)
        await other.close()
        session_id = uuid.uuid4().hex
        assert await replica.claim(session_id)
        assert replica._lease not in (None, lapsed)
        assert "expired; taking a new one" in caplog.text
        # The claim is held under the new lease: another replica cannot take it.
        rival = await owners(etcd_endpoint)
        try:
            assert not await rival.claim(session_id)
        finally:
            await rival.close()
    finally:
        await replica.close()
        await etcd.close()
