"""The audit log's contract, against the log beside every session store
(memory, SQLite in the store's file, a real etcd)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.runtime.errors import PermissionDenied
from services.session.audit_log import AuditEvent, AuditKind, AuditLog, AuditTrail, MemoryAuditLog
from services.session.etcd_store import EtcdStore
from services.session.server import open_audit_log
from services.session.sqlite_store import SqliteStore
from tests.session.stores import STORE_KINDS, open_store

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(params=STORE_KINDS)
async def audit(request: pytest.FixtureRequest) -> AsyncIterator[AuditLog]:
    async with open_store(request.param, request) as store:
        yield open_audit_log(store)


def event(
    seconds: float, session_id: str = "s1", kind: AuditKind = AuditKind.CONTROL_CHANGED
) -> AuditEvent:
    return AuditEvent(
        at=T0 + timedelta(seconds=seconds),
        session_id=session_id,
        kind=kind,
        user_id="alice",
        source_address="127.0.0.1",
        detail={"action": "take_control", "n": int(seconds)},
    )


async def test_since_answers_events_at_or_after_oldest_first(audit: AuditLog) -> None:
    # Appended out of order: read back in time order, every field kept.
    for seconds in (3, 1, 2, 5):
        await audit.append(event(seconds))
    got = await audit.since(T0 + timedelta(seconds=2))
    assert got == [event(2), event(3), event(5)]
    assert await audit.since(T0 + timedelta(seconds=6)) == []


async def test_events_of_one_microsecond_keep_their_order(audit: AuditLog) -> None:
    first = event(1, kind=AuditKind.STREAM_OPENED)
    second = event(1, kind=AuditKind.STREAM_CLOSED)
    await audit.append(first)
    await audit.append(second)
    assert await audit.since(T0) == [first, second]


async def test_since_filters_by_session_and_limits(audit: AuditLog) -> None:
    for n in range(6):
        await audit.append(event(n, session_id="a" if n % 2 else "b"))
    assert await audit.since(T0, session_id="a") == [event(1, "a"), event(3, "a"), event(5, "a")]
    assert await audit.since(T0, session_id="a", limit=2) == [event(1, "a"), event(3, "a")]
    assert await audit.since(T0, limit=4) == [event(n, "a" if n % 2 else "b") for n in range(4)]
    assert await audit.since(T0, session_id="nobody") == []


async def test_forget_before_drops_only_older_events(audit: AuditLog) -> None:
    for n in range(4):
        await audit.append(event(n))
    assert await audit.forget_before(T0 + timedelta(seconds=2)) == 2
    assert await audit.since(T0 - timedelta(days=1)) == [event(2), event(3)]
    assert await audit.forget_before(T0) == 0


async def test_sqlite_audit_survives_a_restart(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    store = SqliteStore.open(state_dir)
    await open_audit_log(store).append(event(1))
    await store.close()
    store = SqliteStore.open(state_dir)
    try:
        assert await open_audit_log(store).since(T0) == [event(1)]
    finally:
        await store.close()


async def test_etcd_audit_is_beside_the_sessions_not_under_them(etcd_endpoint: str) -> None:
    prefix = f"/baton-test/{uuid.uuid4().hex}/sessions/"
    store = await EtcdStore.connect([etcd_endpoint], prefix=prefix)
    try:
        audit = open_audit_log(store)
        await audit.append(event(1))
        # Listing the sessions does not find audit keys (they are a sibling prefix).
        assert await store.list_all() == []
        assert await audit.since(T0) == [event(1)]
    finally:
        await store.close()


async def test_the_trail_forgets_past_retention_and_reads_for_operators_only() -> None:
    now = T0 + timedelta(days=31)
    trail = AuditTrail(MemoryAuditLog(), lambda: now)
    await trail.log.append(event(0))
    await trail.record("s1", AuditKind.SHARE_REVOKED, "alice", "127.0.0.1", {"shareId": "x"})
    assert await trail.forget_expired(30 * 24 * 3600.0) == 1
    (kept,) = await trail.read(True, T0, None, 0)
    assert (kept.at, kept.kind, kept.detail) == (now, AuditKind.SHARE_REVOKED, {"shareId": "x"})
    with pytest.raises(PermissionDenied):
        await trail.read(False, T0, None, 0)
