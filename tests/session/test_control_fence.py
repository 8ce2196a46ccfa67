"""The ControlFence port: the in-process fence and the etcd one (a real etcd)
behave alike; the etcd one's entries lapse under leases whoever wrote them;
the pure parts (fence_keys.py, etcd_leases.py) on their own."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import aetcd
import pytest

from services.runtime.etcd_client import connect_first
from services.session import fence_keys
from services.session.control_fence import ControlFence, MemoryControlFence
from services.session.etcd_fence import EtcdControlFence
from services.session.etcd_leases import SharedLeases

LEASE_S = 90.0
# Two views of one fence (two replicas' fences in etcd).
Pair = tuple[ControlFence, ControlFence]
WAIT_S = 0.3


@pytest.fixture
async def etcd(etcd_endpoint: str) -> AsyncIterator[aetcd.Client]:
    client = await connect_first([etcd_endpoint])
    yield client
    await client.close()


@pytest.fixture(params=["memory", "etcd"])
async def fences(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    """Two views of one fence: what one replica is told, the other knows."""
    if request.param == "memory":
        fence = MemoryControlFence(LEASE_S)
        yield fence, fence
        return
    endpoint: str = request.getfixturevalue("etcd_endpoint")
    one, two = await connect_first([endpoint]), await connect_first([endpoint])
    prefix = f"/baton-test/{uuid.uuid4().hex}/fence/"
    try:
        yield EtcdControlFence(one, LEASE_S, prefix), EtcdControlFence(two, LEASE_S, prefix)
    finally:
        await one.close()
        await two.close()


def session_id() -> str:
    return uuid.uuid4().hex


async def test_no_holder_no_wait(fences: Pair) -> None:
    reporter, waiter = fences
    sid = session_id()
    # An edge whose only viewer left holds no gate.
    await reporter.viewers_changed(sid, "edge-1", +1)
    await reporter.viewers_changed(sid, "edge-1", -1)
    began = time.monotonic()
    assert await waiter.wait(sid, 5, WAIT_S) == []
    assert time.monotonic() - began < WAIT_S


async def test_the_wait_ends_when_every_holder_acknowledged_the_version(
    fences: Pair,
) -> None:
    reporter, waiter = fences
    sid = session_id()
    await reporter.viewers_changed(sid, "edge-1", +1)
    await reporter.access_granted(sid, "edge-2")
    waiting = asyncio.create_task(waiter.wait(sid, 7, 5))
    await asyncio.sleep(0.2)
    await reporter.acknowledge(sid, "edge-1", 7)
    await reporter.acknowledge(sid, "edge-2", 6)  # older: does not count
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await reporter.acknowledge(sid, "edge-2", 8)
    assert await asyncio.wait_for(waiting, 2) == []


async def test_an_acknowledgement_made_before_the_wait_counts(
    fences: Pair,
) -> None:
    reporter, waiter = fences
    sid = session_id()
    await reporter.viewers_changed(sid, "edge-1", +1)
    await reporter.acknowledge(sid, "edge-1", 3)
    await reporter.acknowledge(sid, "edge-1", 2)  # never goes back
    began = time.monotonic()
    assert await waiter.wait(sid, 3, WAIT_S) == []
    assert time.monotonic() - began < WAIT_S


async def test_a_silent_edge_is_late_once_then_forgotten_until_it_reports_again(
    fences: Pair,
) -> None:
    reporter, waiter = fences
    sid = session_id()
    await reporter.viewers_changed(sid, "edge-1", +1)
    began = time.monotonic()
    assert await waiter.wait(sid, 1, WAIT_S) == ["edge-1"]
    assert WAIT_S <= time.monotonic() - began < WAIT_S + 1
    began = time.monotonic()
    assert await waiter.wait(sid, 2, WAIT_S) == []
    assert time.monotonic() - began < WAIT_S
    # Its next "still there" report makes it a holder again.
    await reporter.viewers_changed(sid, "edge-1", 0)
    assert await waiter.wait(sid, 3, WAIT_S) == ["edge-1"]


async def test_etcd_entries_lapse_with_the_viewer_lease_though_their_writer_is_gone(
    etcd_endpoint: str, etcd: aetcd.Client
) -> None:
    prefix = f"/baton-test/{uuid.uuid4().hex}/fence/"
    sid = session_id()
    writer_client = await connect_first([etcd_endpoint])
    writer = EtcdControlFence(writer_client, 2, prefix)
    await writer.viewers_changed(sid, "edge-1", +1)
    await writer_client.close()  # the replica that took the report is gone
    waiter = EtcdControlFence(etcd, 2, prefix)
    key = fence_keys.key(prefix, sid, "edge-1", fence_keys.VIEWERS)
    # Still there right after: the writer's death took nothing with it.
    assert await etcd.get(key) is not None
    # No report for longer than the lease (2 s): the entry is gone.
    await asyncio.sleep(3.2)
    assert await etcd.get(key) is None
    began = time.monotonic()
    assert await waiter.wait(sid, 2, WAIT_S) == []
    assert time.monotonic() - began < WAIT_S


# --- pure parts


def test_keys_parse_back_to_their_edge_and_kind() -> None:
    keys = fence_keys.session_prefix("/p/", "s1")
    raw = fence_keys.key("/p/", "s1", "edge/with/slashes", fence_keys.ACK)
    assert fence_keys.parse(keys, raw) == ("edge/with/slashes", fence_keys.ACK)
    assert fence_keys.parse(keys, b"/p/s2/e/ack") is None
    assert fence_keys.parse(keys, b"/p/s1/e/other") is None
    assert fence_keys.parse(keys, b"/p/s1/ack") is None


def test_viewer_counts_and_acknowledgements_change_as_reported() -> None:
    assert fence_keys.viewers_after(None, +1) == b"1"
    assert fence_keys.viewers_after(b"2", -1) == b"1"
    assert fence_keys.viewers_after(b"0", -1) == b"0"
    # "Still there" means at least one, whatever was lost.
    assert fence_keys.viewers_after(None, 0) == b"1"
    assert fence_keys.viewers_after(b"3", 0) == b"3"
    assert fence_keys.acknowledged_after(None, 4) == b"4"
    assert fence_keys.acknowledged_after(b"5", 4) is None
    assert fence_keys.acknowledged_after(b"junk", 4) == b"4"


def test_holders_are_edges_with_viewers_or_a_recent_access() -> None:
    keys = fence_keys.session_prefix("/p/", "s")
    entries = fence_keys.read_entries(
        keys,
        [
            (b"/p/s/viewing/viewers", b"2", 10),
            (b"/p/s/viewing/ack", b"7", 11),
            (b"/p/s/left/viewers", b"0", 12),
            (b"/p/s/opening/access", b"", 13),
            (b"/p/s/acked-only/ack", b"9", 14),
            (b"/p/other/x/viewers", b"1", 15),
        ],
    )
    assert sorted(entries) == ["acked-only", "left", "opening", "viewing"]
    assert entries["viewing"].viewers_revision == 10
    assert entries["opening"].access_revision == 13
    assert fence_keys.waiting_on(entries, 7) == {"opening"}
    assert fence_keys.waiting_on(entries, 8) == {"opening", "viewing"}


async def test_a_lease_is_reused_within_its_window_only() -> None:
    now = [100.0]
    granted: list[int] = []

    async def grant(ttl: int) -> int:
        granted.append(ttl)
        return len(granted)

    leases = SharedLeases(grant, ttl_s=90, reuse_s=30, clock=lambda: now[0])
    assert await leases.current() == 1
    now[0] += 29.9
    assert await leases.current() == 1
    now[0] += 0.1
    assert await leases.current() == 2
    assert granted == [90, 90]
    # Concurrent callers share one grant.
    now[0] += 31
    assert list(await asyncio.gather(leases.current(), leases.current())) == [3, 3]
    assert len(granted) == 3
    with pytest.raises(ValueError, match="shorter"):
        SharedLeases(grant, ttl_s=10, reuse_s=10)
