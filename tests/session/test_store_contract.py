"""The store contract, run against the in-memory store and a real etcd."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from services.runtime.errors import Conflict
from services.session.model import ControlState
from services.session.store import SessionStore, Stored
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
