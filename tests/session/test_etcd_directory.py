"""EtcdWorkerDirectory against records written by hand into a real etcd."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import aetcd
import grpc
import pytest

from services.runtime.etcd_client import connect_first
from services.runtime.worker_registry import WorkerRecord, key_for
from services.session.etcd_directory import EtcdWorkerDirectory
from services.session.workers import LostHost
from tests.conftest import INTERNAL_TOKEN, eventually


def record(host_id: str, epoch: str = "e1", held: int = 0) -> WorkerRecord:
    return WorkerRecord(
        host_id=host_id,
        epoch=epoch,
        display_address="127.0.0.1:1",
        automation_address="127.0.0.1:2",
        stream_address="127.0.0.1:3",
        max_slots=3,
        held=held,
        warm_ready=0,
        draining=False,
        started_at=1.0,
    )


@pytest.fixture
async def etcd(etcd_endpoint: str) -> AsyncIterator[aetcd.Client]:
    client = await connect_first([etcd_endpoint])
    yield client
    await client.close()


async def test_hosts_come_change_and_go_as_the_registry_says(
    etcd_endpoint: str, etcd: aetcd.Client
) -> None:
    # Unique names: the etcd is shared with the other tests of the run.
    a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    await etcd.put(key_for(a).encode(), record(a).to_json())
    directory = EtcdWorkerDirectory((etcd_endpoint,), INTERNAL_TOKEN)
    await directory.start()
    try:
        lost = directory.lost_hosts()
        # Listed at start.
        view = next(v for v in directory.live_hosts() if v.host.host_id == a)
        assert view.record == record(a)
        assert view.host.display_address == "127.0.0.1:1"

        # Broken records are ignored; the directory goes on.
        await etcd.put(key_for(b).encode(), b"{not json")
        await etcd.put(key_for(b).encode(), record("someone-else").to_json())
        await etcd.put(key_for(b).encode(), record(b, held=2).to_json())
        await eventually(lambda: directory.host(b) is not None)
        assert directory.record(b) == record(b, held=2)

        # Capacity changes keep the host (and its channels).
        first_host = directory.host(a)
        await etcd.put(key_for(a).encode(), replace(record(a), held=1).to_json())
        await eventually(lambda: getattr(directory.record(a), "held", None) == 1)
        assert directory.host(a) is first_host

        # Another epoch: the old one is lost, and its channels closed.
        await etcd.put(key_for(a).encode(), record(a, epoch="e2").to_json())
        assert await asyncio.wait_for(anext(lost), 5) == LostHost(a, "e1")
        assert getattr(directory.record(a), "epoch", None) == "e2"
        assert first_host is not None and directory.host(a) is not first_host
        with pytest.raises(grpc.aio.UsageError):
            await first_host.display.list_slots()

        await etcd.delete(key_for(b).encode())
        assert await asyncio.wait_for(anext(lost), 5) == LostHost(b, "e1")
        assert directory.host(b) is None
    finally:
        await directory.close()
        await etcd.delete(key_for(a).encode())
    # Closing ends every feed.
    assert await anext(lost, None) is None
