"""EtcdConnection's fail-over on a real etcd (services/runtime/etcd_client.py).

One etcd reached under two names stands for two members: moving the connection
to "the other member" is then a real reconnect with nothing else changed. What
a killed member does to a whole cluster is in tests/cluster."""

from __future__ import annotations

import asyncio
import uuid

import aetcd
import aetcd.rtypes
import pytest

from services.runtime.etcd_client import EtcdConnection, opened


def two_names(endpoint: str) -> list[str]:
    port = endpoint.rsplit(":", 1)[1]
    return [f"127.0.0.1:{port}", f"localhost:{port}"]


async def test_a_call_in_flight_when_the_connection_moves_still_gets_its_answer(
    etcd_endpoint: str,
) -> None:
    etcd = await EtcdConnection.open(two_names(etcd_endpoint))
    try:
        key = f"/test-{uuid.uuid4().hex}/moved".encode()
        old = etcd.client
        # In flight on the old client: a watch for the next change of the key.
        waiting = asyncio.ensure_future(old.watch_once(key, timeout=10))
        await asyncio.sleep(0.3)
        await etcd.fail_over(old)
        assert etcd.client is not old
        await etcd.client.put(key, b"after the move")
        event = await asyncio.wait_for(waiting, 10)
        assert event.kv.value == b"after the move"
    finally:
        await etcd.close()


async def test_the_client_left_behind_is_closed_after_its_grace(etcd_endpoint: str) -> None:
    client = aetcd.Client(*etcd_endpoint.rsplit(":", 1))
    await client.connect()
    etcd = EtcdConnection(client, two_names(etcd_endpoint), retired_grace_s=0.2)
    try:
        await etcd.fail_over(client)
        assert etcd.client is not client
        assert client.channel is not None
        for _ in range(50):
            if client.channel is None:
                break
            await asyncio.sleep(0.05)
        assert client.channel is None, "the retired client is still open"
        # The connection in use works.
        await etcd.client.status()
    finally:
        await etcd.close()


async def test_a_watch_opened_as_its_task_is_cancelled_is_cancelled_too(
    etcd_endpoint: str,
) -> None:
    """What Python 3.11's wait_for does inside aetcd when etcd's answer and the
    cancellation arrive together: the cancellation is dropped and the watch
    returned. `opened` notices the task is being cancelled and raises."""
    client = aetcd.Client(*etcd_endpoint.rsplit(":", 1))
    key = f"/test-{uuid.uuid4().hex}/opened".encode()
    cancelled_mid_open = asyncio.Event()

    async def open_dropping_the_cancellation() -> aetcd.rtypes.Watch:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled_mid_open.set()
        return await client.watch(key)

    try:
        task = asyncio.ensure_future(opened(open_dropping_the_cancellation()))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        assert cancelled_mid_open.is_set()  # the positive marker: it was dropped
    finally:
        await client.close()
