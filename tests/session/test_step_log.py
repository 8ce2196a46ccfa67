"""Each store's step log: appended in the record's compare-and-swap, bounded,
read back with the record, removed with it (store.py, "Store layout" in
services/session/README.md). Memory, SQLite and a real etcd."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import aetcd
import pytest

from baton.automation.v1 import automation_pb2
from services.runtime.etcd_client import parse_endpoint
from services.session import codec
from services.session.etcd_store import EtcdStore
from services.session.model import EventKind, LastEvent, Session
from services.session.records import new_step
from services.session.sqlite_store import SqliteStore
from services.session.store import SessionStore
from tests.session.factories import make_session
from tests.session.stores import STORE_KINDS, open_store

KEPT = 3


def stepped(session: Session, index: int) -> tuple[Session, automation_pb2.StepEvent]:
    """The session after one more step event, and that step (as task_projection)."""
    step = automation_pb2.StepEvent(index=index, action="click", description=f"step {index}")
    changed = replace(
        session,
        version=session.version + 1,
        step_count=session.step_count + 1,
        last_event=LastEvent(EventKind.STEP, step=step),
    )
    return changed, step


async def append_steps(store: SessionStore, session_id: str, count: int) -> Session:
    for _ in range(count):
        current = await store.get(session_id)
        assert current is not None
        changed, step = stepped(current.session, current.session.step_count)
        assert await store.swap(changed, current.revision, step) is not None
    final = await store.get(session_id)
    assert final is not None
    return final.session


def indexes(steps: tuple[automation_pb2.StepEvent, ...]) -> list[int]:
    return [step.index for step in steps]


@pytest.mark.parametrize("kind", STORE_KINDS)
async def test_steps_are_appended_with_the_record_and_read_back_with_it(
    kind: str, request: pytest.FixtureRequest
) -> None:
    async with open_store(kind, request) as store:
        await store.create(make_session(session_id="a"))
        await store.create(make_session(session_id="ab"))
        session = await append_steps(store, "a", 2)
        await append_steps(store, "ab", 1)
        found = await store.get_full("a")
        assert found is not None
        full, revision = found
        assert full.session == session and session.step_count == 2
        assert indexes(full.steps) == [0, 1]
        assert full.steps[1].description == "step 1"
        current = await store.get("a")
        assert current is not None and current.revision == revision
        # A change that is not a step appends nothing; the log stays.
        assert await store.swap(replace(session, version=9), revision) is not None
        again = await store.get_full("a")
        assert again is not None and indexes(again[0].steps) == [0, 1]
        # The log of "a" is not mixed with that of "ab" (an id it prefixes).
        other = await store.get_full("ab")
        assert other is not None and indexes(other[0].steps) == [0]
        assert await store.get_full("missing") is None
        # Listing the sessions finds sessions only, not step keys.
        assert sorted(s.session.id for s in await store.list_all()) == ["a", "ab"]


@pytest.mark.parametrize("kind", STORE_KINDS)
async def test_only_the_newest_steps_are_kept_and_the_count_goes_on(
    kind: str, request: pytest.FixtureRequest
) -> None:
    async with open_store(kind, request, steps_kept=KEPT) as store:
        await store.create(make_session(session_id="a"))
        session = await append_steps(store, "a", KEPT + 2)
        found = await store.get_full("a")
        assert found is not None
        assert session.step_count == KEPT + 2
        assert indexes(found[0].steps) == [2, 3, 4]
        assert await stored_step_count(kind, store, request) == KEPT


async def stored_step_count(kind: str, store: SessionStore, request: pytest.FixtureRequest) -> int:
    """How many steps the store holds as stored (dropped ones really gone)."""
    if kind == "memory":
        found = [await store.get_full(s.session.id) for s in await store.list_all()]
        return sum(len(f[0].steps) for f in found if f is not None)
    if kind == "sqlite":
        path: Path = request.getfixturevalue("tmp_path") / "session-state" / "sessions.db"
        with sqlite3.connect(path) as raw:
            (count,) = raw.execute("SELECT count(*) FROM steps").fetchone()
        return int(count)
    assert isinstance(store, EtcdStore)
    return len(await raw_etcd_keys(request, store.steps_prefix))


async def raw_etcd_keys(request: pytest.FixtureRequest, prefix: str) -> list[str]:
    host, port = parse_endpoint(request.getfixturevalue("etcd_endpoint"))
    client = aetcd.Client(host=host, port=port)
    await client.connect()
    try:
        return sorted(kv.key.decode() for kv in await client.get_prefix(prefix.encode()))
    finally:
        await client.close()


@pytest.mark.parametrize("kind", STORE_KINDS)
async def test_a_lost_compare_and_swap_appends_nothing(
    kind: str, request: pytest.FixtureRequest
) -> None:
    async with open_store(kind, request) as store:
        created = await store.create(make_session(session_id="a"))
        current = await store.get("a")
        assert current is not None
        # Twenty writers race, each with its own step: one wins, one step is logged.
        attempts = []
        for index in range(20):
            changed, step = stepped(current.session, 100 + index)
            attempts.append(store.swap(changed, created, step))
        results = await asyncio.gather(*attempts)
        assert sum(result is not None for result in results) == 1
        found = await store.get_full("a")
        assert found is not None
        assert found[0].session.step_count == 1 and len(found[0].steps) == 1
        # A stale revision: refused, and its step is not logged.
        changed, step = stepped(found[0].session, 999)
        assert await store.swap(changed, created, step) is None
        again = await store.get_full("a")
        assert again is not None and indexes(again[0].steps) == indexes(found[0].steps)


@pytest.mark.parametrize("kind", STORE_KINDS)
async def test_deleting_a_session_deletes_its_steps(
    kind: str, request: pytest.FixtureRequest
) -> None:
    async with open_store(kind, request) as store:
        await store.create(make_session(session_id="a"))
        await append_steps(store, "a", 2)
        current = await store.get("a")
        assert current is not None
        assert await store.delete("a", current.revision)
        assert await store.get_full("a") is None
        assert await stored_step_count(kind, store, request) == 0
        # The same id again starts with an empty log.
        await store.create(make_session(session_id="a"))
        found = await store.get_full("a")
        assert found is not None and found[0].steps == ()


async def test_etcd_keeps_each_step_under_its_session_and_zero_padded_seq(
    request: pytest.FixtureRequest,
) -> None:
    async with open_store("etcd", request, steps_kept=KEPT) as store:
        assert isinstance(store, EtcdStore)
        await store.create(make_session(session_id="a"))
        await append_steps(store, "a", 11)
        keys = await raw_etcd_keys(request, store.steps_prefix)
        assert store.steps_prefix.endswith("/steps/")
        # Seqs 9, 10, 11: padded so that key order is seq order.
        assert [key.removeprefix(store.steps_prefix) for key in keys] == [
            "a/000000000009",
            "a/000000000010",
            "a/000000000011",
        ]


async def test_sqlite_keeps_the_log_across_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = SqliteStore.open(state, steps_kept=KEPT)
    await store.create(make_session(session_id="a"))
    await append_steps(store, "a", KEPT + 1)
    await store.close()
    reopened = SqliteStore.open(state, steps_kept=KEPT)
    try:
        found = await reopened.get_full("a")
        assert found is not None
        assert (found[0].session.step_count, indexes(found[0].steps)) == (4, [1, 2, 3])
        session = await append_steps(reopened, "a", 1)
        again = await reopened.get_full("a")
        assert again is not None
        assert (session.step_count, indexes(again[0].steps)) == (5, [2, 3, 4])
    finally:
        await reopened.close()


async def test_sqlite_moves_the_steps_of_an_older_record_into_the_log(tmp_path: Path) -> None:
    state = tmp_path / "state"
    await SqliteStore.open(state).close()  # the schema, empty
    # A record as stored before the step log: its steps inside it, no count.
    data = json.loads(codec.encode(make_session(session_id="old")))
    del data["stepCount"]
    old_steps = [automation_pb2.StepEvent(index=i, action="goto") for i in range(3)]
    data["steps"] = [codec._b64(step) for step in old_steps]
    with sqlite3.connect(state / "sessions.db") as raw:
        raw.execute(
            "INSERT INTO sessions (id, revision, data) VALUES (?, ?, ?)",
            ("old", 1, json.dumps(data).encode()),
        )
    store = SqliteStore.open(state)
    try:
        found = await store.get_full("old")
        assert found is not None
        assert (found[0].session.step_count, indexes(found[0].steps)) == (3, [0, 1, 2])
        session = await append_steps(store, "old", 1)
        assert session.step_count == 4
    finally:
        await store.close()
    with sqlite3.connect(state / "sessions.db") as raw:
        (stored,) = raw.execute("SELECT data FROM sessions WHERE id = 'old'").fetchone()
    assert "steps" not in json.loads(stored)


def test_a_change_appends_one_step_at_most() -> None:
    session = make_session()
    one, step = stepped(session, 0)
    assert new_step(session, one) == step
    assert new_step(one, replace(one, version=9)) is None
    two, _ = stepped(one, 1)
    with pytest.raises(ValueError, match="exactly one step"):
        new_step(session, two)
