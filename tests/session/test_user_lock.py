"""UserLock: one create per user at a time; EtcdUserLock against a real etcd,
across clients as replicas hold them, and after a holder dies."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import aetcd
import pytest

from services.runtime.errors import Unavailable
from services.runtime.etcd_client import connect_first
from services.session.etcd_user_lock import EtcdUserLock
from services.session.user_lock import LocalUserLock, UserLock


@pytest.fixture
async def clients(etcd_endpoint: str) -> AsyncIterator[tuple[aetcd.Client, aetcd.Client]]:
    one, two = await connect_first([etcd_endpoint]), await connect_first([etcd_endpoint])
    yield one, two
    await one.close()
    await two.close()


def prefix() -> str:
    return f"/baton-test/{uuid.uuid4().hex}/locks/"


async def one_at_a_time(first: UserLock, second: UserLock) -> None:
    inside: list[str] = []
    order: list[str] = []

    async def create(lock: UserLock, name: str) -> None:
        async with lock.hold("alice"):
            inside.append(name)
            assert len(inside) == 1, inside
            order.append(name)
            await asyncio.sleep(0.2)
            inside.remove(name)

    await asyncio.gather(*(create(first if i % 2 else second, f"c{i}") for i in range(4)))
    assert len(order) == 4


async def test_the_local_lock_lets_one_create_in_at_a_time() -> None:
    lock = LocalUserLock()
    await one_at_a_time(lock, lock)


async def test_the_etcd_lock_lets_one_create_in_at_a_time_across_clients(
    clients: tuple[aetcd.Client, aetcd.Client],
) -> None:
    shared = prefix()
    await one_at_a_time(EtcdUserLock(clients[0], shared), EtcdUserLock(clients[1], shared))
    # Given back: nothing is left held.
    assert await clients[0].get(f"{shared}alice".encode()) is None


async def test_a_lock_of_a_dead_holder_frees_itself_with_its_lease(
    clients: tuple[aetcd.Client, aetcd.Client],
) -> None:
    shared = prefix()
    # A replica took the lock and died: its key stays until its lease (2 s) runs out.
    lease = await clients[0].lease(2)
    await clients[0].put(f"{shared}alice".encode(), b"dead", lease=lease)
    lock = EtcdUserLock(clients[1], shared, lease_ttl_s=2, hold_s=1)
    began = time.monotonic()
    async with lock.hold("alice"):
        waited = time.monotonic() - began
    assert 0.5 < waited < 4.5
    # Other users never waited for alice's lock.
    began = time.monotonic()
    await clients[0].put(f"{shared}alice".encode(), b"dead", lease=await clients[0].lease(5))
    async with lock.hold("bob"):
        assert time.monotonic() - began < 1


async def test_a_lock_held_too_long_is_refused_and_given_back(
    clients: tuple[aetcd.Client, aetcd.Client],
) -> None:
    shared = prefix()
    slow = EtcdUserLock(clients[0], shared, lease_ttl_s=3, hold_s=0.3)
    with pytest.raises(Unavailable, match=r"took over 0\.3 s"):
        async with slow.hold("alice"):
            await asyncio.sleep(2)
    impatient = EtcdUserLock(clients[1], shared, wait_s=0.3)
    async with impatient.hold("alice"):
        pass
    async with EtcdUserLock(clients[0], shared).hold("alice"):
        with pytest.raises(Unavailable, match="held by another create"):
            async with impatient.hold("alice"):
                pass
