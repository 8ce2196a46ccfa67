"""The store contract, run against the in-memory store and a real etcd."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import aetcd
import aetcd.exceptions
import pytest

from services.runtime.errors import Conflict, FailedPrecondition, Unavailable
from services.session.etcd_store import EtcdStore
from services.session.input_buckets import InputBucket
from services.session.model import ControlState, Session
from services.session.sqlite_store import SqliteStore
from services.session.store import WATCH_BACKLOG, MemoryStore, SessionStore, Stored
from tests.conftest import free_port, start_etcd, stop_etcd
from tests.session.factories import make_session
from tests.session.stores import store

__all__ = ["store"]


async def test_create_get_list(store: SessionStore) -> None:
    first = make_session(session_id="a")
    revision = await store.create(first)
    await store.create(make_session(session_id="b", owner_user_id="bob"))
    got = await store.get("a")
    assert got == Stored(first, revision)
    assert await store.get("missing") is None
    assert sorted(s.session.id for s in await store.list_all()) == ["a", "b"]


async def test_the_input_buckets_are_kept(store: SessionStore) -> None:
    at = datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)
    session = replace(make_session(session_id="a"), inputs=(InputBucket(at, 3, 7),))
    revision = await store.create(session)
    assert await store.get("a") == Stored(session, revision)


async def test_create_twice_is_a_conflict(store: SessionStore) -> None:
    await store.create(make_session(session_id="a"))
    with pytest.raises(Conflict):
        await store.create(make_session(session_id="a"))


async def test_swap_needs_the_current_revision(store: SessionStore) -> None:
    revision = await store.create(make_session(session_id="a"))
    paused = make_session(ControlState.PAUSED, session_id="a", version=2)
    new_revision = await store.swap(paused, revision)
    assert new_revision is not None and new_revision > revision
    # The old revision is stale now: the swap is refused and nothing changes.
    assert await store.swap(make_session(ControlState.ENDED, session_id="a"), revision) is None
    current = await store.get("a")
    assert current is not None
    assert current.session.state is ControlState.PAUSED
    assert current.revision == new_revision


async def test_of_concurrent_swaps_exactly_one_wins(store: SessionStore) -> None:
    revision = await store.create(make_session(session_id="a"))
    attempts = [
        store.swap(make_session(session_id="a", controller_user_id=f"user{i}"), revision)
        for i in range(20)
    ]
    results = await asyncio.gather(*attempts)
    assert sum(result is not None for result in results) == 1


async def test_watch_yields_every_later_change_in_order(store: SessionStore) -> None:
    session = make_session(session_id="a")
    revision = await store.create(session)
    seen: list[Stored] = []

    async def watch() -> None:
        async for change in store.watch("a", revision):
            seen.append(change)
            if len(seen) == 3:
                return

    watcher = asyncio.create_task(watch())
    current = revision
    for version in (2, 3, 4):
        swapped = await store.swap(replace(session, version=version), current)
        assert swapped is not None
        current = swapped
    await asyncio.wait_for(watcher, 10)
    assert [s.session.version for s in seen] == [2, 3, 4]
    assert seen[-1].revision == current


async def test_watch_from_an_older_revision_replays(store: SessionStore) -> None:
    session = make_session(session_id="a")
    first = await store.create(session)
    second = await store.swap(replace(session, version=2), first)
    assert second is not None
    changes = store.watch("a", first)
    replayed = await asyncio.wait_for(anext(changes), 10)
    await changes.aclose()  # type: ignore[attr-defined]
    assert (replayed.session.version, replayed.revision) == (2, second)


async def test_an_etcd_watch_from_a_compacted_revision_catches_up(etcd_endpoint: str) -> None:
    etcd = await EtcdStore.connect([etcd_endpoint], prefix=f"/baton-test/{uuid.uuid4().hex}/")
    try:
        session = make_session(session_id="a")
        first = await etcd.create(session)
        current = first
        for version in (2, 3, 4):
            swapped = await etcd.swap(replace(session, version=version), current)
            assert swapped is not None
            current = swapped
        await etcd._etcd.client.compact(current)
        changes = etcd.watch("a", first)
        # The changes in between are gone from etcd: the latest stands in for them.
        latest = await asyncio.wait_for(anext(changes), 10)
        assert (latest.session.version, latest.revision) == (4, current)
        later = await etcd.swap(replace(session, version=5), current)
        following = await asyncio.wait_for(anext(changes), 10)
        await changes.aclose()  # type: ignore[attr-defined]
        assert (following.session.version, following.revision) == (5, later)
    finally:
        await etcd.close()


async def test_an_etcd_watch_survives_an_etcd_restart(tmp_path: Path) -> None:
    client_port, peer_port = free_port(), free_port()
    process = start_etcd(tmp_path / "etcd", client_port, peer_port)
    etcd: EtcdStore | None = None
    try:
        for _ in range(400):
            with contextlib.suppress(Unavailable):
                etcd = await EtcdStore.connect([f"127.0.0.1:{client_port}"])
                break
            await asyncio.sleep(0.05)
        assert etcd is not None, "etcd did not start"
        session = make_session(session_id="a")
        revision = await etcd.create(session)
        changes = etcd.watch("a", revision)
        first = asyncio.create_task(next_change(changes))
        revision = await swap_when_up(etcd, replace(session, version=2), revision)
        assert (await asyncio.wait_for(first, 10)).session.version == 2
        # etcd goes away and comes back (same data) while the watch is open.
        following = asyncio.create_task(next_change(changes))
        stop_etcd(process)
        process = start_etcd(tmp_path / "etcd", client_port, peer_port)
        later = await swap_when_up(etcd, replace(session, version=3), revision)
        change = await asyncio.wait_for(following, 30)
        await changes.aclose()  # type: ignore[attr-defined]
        assert (change.session.version, change.revision) == (3, later)
    finally:
        if etcd is not None:
            await etcd.close()
        stop_etcd(process)


async def swap_when_up(etcd: EtcdStore, session: Session, revision: int) -> int:
    """Swap, trying again while etcd is still starting."""
    for _ in range(400):
        with contextlib.suppress(Unavailable, aetcd.exceptions.ClientError):
            swapped = await etcd.swap(session, revision)
            assert swapped is not None
            return swapped
        await asyncio.sleep(0.05)
    raise AssertionError("etcd did not come back")


async def test_etcd_out_of_reach_is_unavailable() -> None:
    # Nothing listens on that port: etcd is down.
    etcd = EtcdStore(aetcd.Client(host="127.0.0.1", port=free_port(), timeout=2))
    try:
        with pytest.raises(Unavailable):
            await etcd.get("a")
        with pytest.raises(Unavailable):
            await etcd.list_all()
        with pytest.raises(Unavailable):
            await etcd.create(make_session(session_id="a"))
        with pytest.raises(Unavailable):
            await etcd.swap(make_session(session_id="a"), 1)
    finally:
        await etcd.close()


async def test_delete_needs_the_current_revision_and_ends_watches(store: SessionStore) -> None:
    session = make_session(ControlState.ENDED, session_id="a")
    first = await store.create(session)
    second = await store.swap(replace(session, version=2), first)
    assert second is not None
    assert await store.delete("a", first) is False
    changes = store.watch("a", second)
    following = asyncio.create_task(next_change(changes))
    assert await store.delete("a", second) is True
    assert await store.get("a") is None
    assert await store.list_all() == []
    # A watch of a deleted session ends: no change will come.
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(following, 10)
    assert await store.delete("a", second) is False


async def next_change(changes: AsyncIterator[Stored]) -> Stored:
    return await anext(changes)


async def test_the_sqlite_store_keeps_sessions_across_a_restart(tmp_path: Path) -> None:
    first_run = SqliteStore.open(tmp_path)
    session = make_session(session_id="a")
    created = await first_run.create(session)
    swapped = await first_run.swap(replace(session, version=2), created)
    assert swapped is not None
    gone = await first_run.create(make_session(session_id="b"))
    assert await first_run.delete("b", gone)
    # A second service cannot take the same state dir while the first runs.
    with pytest.raises(FailedPrecondition):
        SqliteStore.open(tmp_path)
    # Not closed: a crash leaves the file as it is.
    first_run._lock.close()
    second_run = SqliteStore.open(tmp_path)
    try:
        assert await second_run.get("a") == Stored(replace(session, version=2), swapped)
        assert await second_run.get("b") is None
        # Revisions go on from where they were, so a stale one stays stale.
        assert await second_run.swap(replace(session, version=3), created) is None
        later = await second_run.swap(replace(session, version=3), swapped)
        assert later is not None and later > gone
    finally:
        await second_run.close()
        first_run._db.close()


async def test_a_watcher_that_falls_behind_is_cut_off_and_the_others_go_on() -> None:
    memory = MemoryStore()
    session = make_session()
    revision = await memory.create(session)
    slow = memory.watch(session.id, revision)
    keeping_up = memory.watch(session.id, revision)
    version = session.version

    async def bump() -> None:
        nonlocal revision, version
        version += 1
        swapped = await memory.swap(replace(session, version=version), revision)
        assert swapped is not None
        revision = swapped

    await bump()
    # Both subscribed, and both got the first change.
    assert (await anext(slow)).session.version == version
    assert (await anext(keeping_up)).session.version == version
    for _ in range(WATCH_BACKLOG + 1):
        await bump()
        # The other watcher takes each change as it comes: never cut off.
        assert (await anext(keeping_up)).session.version == version
    # The slow one held WATCH_BACKLOG changes and could not take one more.
    with pytest.raises(Unavailable, match="fell more than 256 changes behind"):
        await anext(slow)
    await bump()
    assert (await anext(keeping_up)).session.version == version
    await cast(AsyncGenerator[Stored, None], keeping_up).aclose()
