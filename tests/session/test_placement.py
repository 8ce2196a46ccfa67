"""Placement over several worker hosts, and hosts lost, with the DirectoryTwin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest

from services.runtime.errors import FailedPrecondition, ResourceExhausted, Unavailable
from services.runtime.settings import Env
from services.runtime.worker_registry import WorkerRecord
from services.session.model import Action, Actor, ControlState, EventKind, Session
from services.session.orchestrator import SessionOrchestrator, SessionSpec
from services.session.placement import CLUSTER_FULL_RETRY_AFTER_S, ranked
from services.session.settings import SessionSettings
from services.session.store import MemoryStore
from services.session.workers import HostView, StaticWorkerDirectory
from tests.conftest import INTERNAL_TOKEN
from tests.session.twins import DirectoryTwin, twin_worker

OPERATOR = Actor("operator", operator=True)
SPEC = SessionSpec(task="t", url="http://127.0.0.1:9/", max_steps=5, steps=(), viewport=None)


@dataclass
class Cluster:
    sessions: SessionOrchestrator
    directory: DirectoryTwin


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    directory = DirectoryTwin()
    settings = SessionSettings(internal_token=INTERNAL_TOKEN, max_sessions_per_user=0)
    sessions = SessionOrchestrator(MemoryStore(), directory, settings)
    yield Cluster(sessions, directory)
    await sessions.close()


def host_of(session: Session) -> str:
    assert session.placement is not None
    return session.placement.host_id


def view(
    host_id: str, max_slots: int, held: int, warm: int = 0, draining: bool = False
) -> HostView:
    host, _, _ = twin_worker()
    record = WorkerRecord(host_id, "e", "d", "a", "s", max_slots, held, warm, draining, 0.0)
    return HostView(host, record)


def test_ranking_prefers_a_warm_slot_then_the_least_loaded_and_skips_the_unusable() -> None:
    hosts = [
        view("busy", 10, 8),
        view("idle", 10, 1),
        view("warm", 10, 9, warm=1),
        view("full", 10, 10, warm=0),
        view("draining", 10, 0, warm=3, draining=True),
    ]
    assert [v.record.host_id for v in ranked(hosts)] == ["warm", "idle", "busy"]


async def test_six_sessions_spread_three_and_three_and_the_seventh_is_refused_at_once(
    cluster: Cluster,
) -> None:
    a, b = cluster.directory.add("a", slots=3), cluster.directory.add("b", slots=3)
    placed = [host_of(await cluster.sessions.create(OPERATOR, SPEC)) for _ in range(6)]
    # By free capacity: each create goes to the host with more free slots.
    assert placed == ["a", "b", "a", "b", "a", "b"]
    assert (len(a.display.slots), len(b.display.slots)) == (3, 3)
    began = asyncio.get_running_loop().time()
    with pytest.raises(ResourceExhausted, match="no worker host has a free slot") as refused:
        await cluster.sessions.create(OPERATOR, SPEC)
    assert asyncio.get_running_loop().time() - began < 0.5
    assert refused.value.retry_after_s == CLUSTER_FULL_RETRY_AFTER_S
    # Refused from the records: no host was asked, no record kept.
    assert (a.display.allocations, b.display.allocations) == (3, 3)
    assert len(await cluster.sessions.list_sessions(OPERATOR)) == 6


async def test_a_host_with_a_warm_slot_is_preferred(cluster: Cluster) -> None:
    cluster.directory.add("roomy", slots=10)
    cluster.directory.add("warm", slots=2, warm_ready=1)
    assert host_of(await cluster.sessions.create(OPERATOR, SPEC)) == "warm"


async def test_a_draining_host_gets_nothing(cluster: Cluster) -> None:
    draining = cluster.directory.add("draining", slots=10)
    draining.draining = True
    cluster.directory.add("live", slots=2)
    placed = [host_of(await cluster.sessions.create(OPERATOR, SPEC)) for _ in range(2)]
    assert placed == ["live", "live"]
    with pytest.raises(ResourceExhausted):
        await cluster.sessions.create(OPERATOR, SPEC)
    assert draining.display.allocations == 0


async def test_a_host_that_refuses_is_skipped_for_the_next(cluster: Cluster) -> None:
    # Its record says free, but another session service took the slots meanwhile
    # (the record lags): AllocateSlot, the reservation, refuses.
    taken = cluster.directory.add("taken", slots=5)
    taken.display.capacity = 0
    # This one's record is not draining yet, but its display already is.
    stopping = cluster.directory.add("stopping", slots=4)
    stopping.display.draining = True
    cluster.directory.add("small", slots=1)
    assert host_of(await cluster.sessions.create(OPERATOR, SPEC)) == "small"
    assert (taken.display.allocations, stopping.display.allocations) == (1, 1)
    # Every host refusing: refused at once, saying why each did.
    with pytest.raises(ResourceExhausted, match=r"slots are in use.*host is draining"):
        await cluster.sessions.create(OPERATOR, SPEC)


async def test_a_display_error_other_than_full_or_draining_is_not_hidden(
    cluster: Cluster,
) -> None:
    broken = cluster.directory.add("broken", slots=5)

    async def refuse(session_id: str, viewport: object, record: bool = False) -> object:
        raise FailedPrecondition("no such viewport")

    broken.display.allocate_slot = refuse  # type: ignore[assignment,method-assign]
    cluster.directory.add("other", slots=1)
    with pytest.raises(FailedPrecondition, match="no such viewport"):
        await cluster.sessions.create(OPERATOR, SPEC)


async def test_a_lost_host_fails_its_sessions_and_leaves_the_others_alone(
    cluster: Cluster,
) -> None:
    cluster.directory.add("a", slots=2)
    b = cluster.directory.add("b", slots=3)
    cluster.sessions.start_background()
    created = [await cluster.sessions.create(OPERATOR, SPEC) for _ in range(4)]
    on_a = [s for s in created if host_of(s) == "a"]
    on_b = [s for s in created if host_of(s) == "b"]
    seen: list[Session] = []

    async def watch() -> None:
        first, changes = await cluster.sessions.watch(OPERATOR, on_a[0].id)
        seen.append(first.session)
        async for change in changes:
            seen.append(change)

    watcher = asyncio.create_task(watch())
    cluster.directory.lose("a")
    await asyncio.wait_for(watcher, 5)
    assert seen[-1].last_event.kind is EventKind.ENDED
    assert (seen[-1].state, seen[-1].ended_reason) == (ControlState.FAILED, "worker host lost")
    ids = {s.id for s in on_a}
    failed = {s.id: s for s in await cluster.sessions.list_sessions(OPERATOR) if s.id in ids}
    while any(not s.state.terminal for s in failed.values()):
        await asyncio.sleep(0.01)
        failed = {s.id: s for s in await cluster.sessions.list_sessions(OPERATOR) if s.id in ids}
    assert {(s.state, s.ended_reason) for s in failed.values()} == {
        (ControlState.FAILED, "worker host lost")
    }
    for session in on_b:
        assert (await cluster.sessions.get(OPERATOR, session.id)).state is ControlState.AI_CONTROL
    assert set(b.display.slots) == {s.placement.slot_id for s in on_b if s.placement}
    # Nothing new goes to the lost host.
    assert host_of(await cluster.sessions.create(OPERATOR, SPEC)) == "b"


async def test_a_call_to_a_host_with_another_epoch_fails_the_session(cluster: Cluster) -> None:
    old = cluster.directory.add("a", slots=2)
    session = await cluster.sessions.create(OPERATOR, SPEC)
    # The host restarted (a new epoch) and no lost event reached us.
    fresh = cluster.directory.restart("a")
    with pytest.raises(FailedPrecondition, match="worker host lost"):
        await cluster.sessions.change_control(OPERATOR, session.id, Action.TAKE_CONTROL, None)
    failed = await cluster.sessions.get(OPERATOR, session.id)
    assert (failed.state, failed.ended_reason) == (ControlState.FAILED, "worker host lost")
    # Neither epoch was asked to pause, nor the new one to release an old slot.
    assert ("pause", session.id) not in old.automation.calls + fresh.automation.calls
    assert fresh.display.released == []


async def test_a_restarted_host_is_watched_anew_for_slot_failures(cluster: Cluster) -> None:
    cluster.directory.add("a", slots=2)
    cluster.sessions.start_background()
    before = await cluster.sessions.create(OPERATOR, SPEC)
    fresh = cluster.directory.restart("a", announce=True)
    await eventually_state(cluster, before.id, ControlState.FAILED)
    after = await cluster.sessions.create(OPERATOR, SPEC)
    assert after.placement is not None and after.placement.host_epoch == fresh.epoch
    # The new epoch's display reports the slot dead: the session fails at once.
    fresh.display.fail(after.placement.slot_id, "Xvnc exited")
    failed = await eventually_state(cluster, after.id, ControlState.FAILED)
    assert failed.ended_reason == "the display crashed"


async def eventually_state(cluster: Cluster, session_id: str, state: ControlState) -> Session:
    for _ in range(500):
        session = await cluster.sessions.get(OPERATOR, session_id)
        if session.state is state:
            return session
        await asyncio.sleep(0.01)
    raise AssertionError(f"session {session_id} is {session.state}, not {state}")


async def test_the_janitor_fails_sessions_whose_host_vanished_on_its_second_look(
    cluster: Cluster,
) -> None:
    cluster.directory.add("a", slots=2)
    cluster.directory.add("b", slots=2)
    on_a = await cluster.sessions.create(OPERATOR, SPEC)
    on_b = await cluster.sessions.create(OPERATOR, SPEC)
    assert (host_of(on_a), host_of(on_b)) == ("a", "b")
    del cluster.directory.hosts["a"]  # gone, its lost event missed
    assert await cluster.sessions.fail_stranded() == []
    assert await cluster.sessions.fail_stranded() == [on_a.id]
    assert (await cluster.sessions.get(OPERATOR, on_b.id)).state is ControlState.AI_CONTROL


async def test_the_static_directory_is_the_one_host_by_its_id() -> None:
    host, _, _ = twin_worker()
    directory = StaticWorkerDirectory(host)
    [only] = directory.live_hosts()
    assert (only.host, only.record.host_id, only.record.draining) == (host, "twin", False)
    assert directory.host("twin") is host
    assert directory.host("elsewhere") is None
    # Its capacity is the display's to judge: placement always tries it.
    assert ranked(directory.live_hosts()) == [only]


def test_the_directory_is_static_without_etcd_or_with_a_display_address() -> None:
    def static(**env: str) -> bool:
        environ = {"BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value, **env}
        return SessionSettings.from_env(Env(environ)).static_workers

    assert static()
    assert static(BATON_ETCD_ENDPOINTS="10.200.0.1:2379", BATON_DISPLAY_ADDRESS="10.200.0.2:1")
    assert not static(BATON_ETCD_ENDPOINTS="10.200.0.1:2379")


async def test_a_recording_whose_host_is_gone_is_read_through_a_host_sharing_its_bucket(
    cluster: Cluster,
) -> None:
    cluster.directory.add("a", slots=1)
    session = await cluster.sessions.create(OPERATOR, replace(SPEC, record=True))
    assert session.recording is not None and session.recording.host_id == "a"
    cluster.directory.lose("a")
    # A host without the bucket (the twin holds nothing) answers NOT_FOUND: none left.
    plain = cluster.directory.add("plain", slots=1)

    async def read() -> bytes:
        messages = cluster.sessions.recordings.read(OPERATOR, session.id, 2, 3)
        return b"".join([m.data async for m in messages])

    with pytest.raises(Unavailable, match="no live host reads it from a shared recording"):
        await read()
    # A host whose display reads the shared bucket serves it.
    shared = cluster.directory.add("shared", slots=1)
    shared.display.recordings[session.id] = b"0123456789"
    assert await read() == b"234"
    assert plain.display.recordings == {}
