"""This worker host's record in the etcd worker registry (README.md, "Worker registry").

The display service owns the host's capacity, so it registers the host: one key
`/baton/workers/<host_id>` (services/runtime/worker_registry.py) under its own
lease, kept alive, rewritten as capacity changes and when the host drains. etcd
out of reach never stops the display service: the registrar logs it, retries with
backoff and registers again under a new lease once etcd answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace

import aetcd
import aetcd.exceptions

from services.display.settings import DisplaySettings
from services.display.slot_allocator import Capacity
from services.display.slot_pool import SlotPool
from services.runtime.cancellation import check_cancelled, unless_cancelled
from services.runtime.etcd_client import connect_first
from services.runtime.worker_registry import WorkerRecord, key_for

log = logging.getLogger(__name__)

# Capacity rewrites are at least this far apart (at most 5 writes a second).
MIN_WRITE_INTERVAL_S = 0.2
# Reconnection after etcd was lost starts at the first delay and doubles up to the
# maximum, so a registry outage is noticed again within seconds of its end.
_RETRY_FIRST_S = 0.2
_RETRY_MAX_S = 2.0


class _LeaseLost(Exception):
    """etcd answered, but our lease is gone (it expired while we were cut off)."""


def first_record(
    settings: DisplaySettings, grpc_port: int, websockify_port: int, capacity: Capacity
) -> WorkerRecord:
    """The record of a host that just started: a new epoch, its addresses, capacity."""
    stream_host = settings.stream_advertise_host or settings.websockify_host
    return WorkerRecord(
        host_id=settings.host_id,
        epoch=uuid.uuid4().hex,
        display_address=settings.display_advertise_address or f"{settings.listen_host}:{grpc_port}",
        automation_address=settings.automation_advertise_address,
        stream_address=f"{stream_host}:{websockify_port}",
        max_slots=capacity.max_slots,
        held=capacity.held,
        warm_ready=capacity.warm_ready,
        draining=False,
        started_at=time.time(),
    )


def with_capacity(record: WorkerRecord, capacity: Capacity) -> WorkerRecord:
    return replace(
        record, max_slots=capacity.max_slots, held=capacity.held, warm_ready=capacity.warm_ready
    )


class WorkerRegistration:
    """Keeps `record` (as it changes) in etcd under a lease of `ttl_s` seconds."""

    def __init__(self, endpoints: Sequence[str], record: WorkerRecord, ttl_s: int) -> None:
        self._endpoints = tuple(endpoints)
        self._ttl_s = ttl_s
        self._key = key_for(record.host_id).encode()
        self._record = record
        self._changed = asyncio.Event()
        # Set when a change must be written without the debounce (draining).
        self._urgent = False
        self._client: aetcd.Client | None = None
        self._lease: aetcd.Lease | None = None
        self._task: asyncio.Task[None] | None = None
        # The record as etcd holds it now (None: not registered at the moment).
        self._written: WorkerRecord | None = None
        self._registered = False

    @property
    def record(self) -> WorkerRecord:
        return self._record

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="worker-registration")

    def update(self, record: WorkerRecord, urgent: bool = False) -> None:
        """Write `record` soon (at once when `urgent`), whatever etcd's state."""
        if record == self._record:
            return
        self._record = record
        self._urgent = self._urgent or urgent
        self._changed.set()

    async def close(self) -> None:
        """Stop keeping the record and revoke the lease: the key goes at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        client, lease = self._client, self._lease
        if client is not None and lease is not None:
            try:
                await asyncio.wait_for(lease.revoke(), self._call_timeout())
                log.info("worker registry: %s unregistered", self._record.host_id)
            except (aetcd.exceptions.ClientError, TimeoutError) as exc:
                # The lease expires on its own within its TTL.
                log.warning("worker registry: could not revoke the lease: %s", exc)
        await self._drop_client()

    def _call_timeout(self) -> float:
        # A call that takes longer than a third of the TTL would let the lease lapse.
        return max(0.5, self._ttl_s / 3)

    async def _drop_client(self) -> None:
        client = self._client
        self._client = None
        self._lease = None
        self._written = None
        if client is not None:
            with contextlib.suppress(aetcd.exceptions.ClientError, OSError):
                await client.close()

    async def _run(self) -> None:
        delay = _RETRY_FIRST_S
        while True:
            check_cancelled()
            try:
                await self._register_and_keep()
            # Whatever went wrong, the host goes on and tries again (never a silent stop).
            except Exception as exc:
                unless_cancelled(exc)
                if self._registered:
                    # Registered until now: this outage starts from a short wait again.
                    delay = _RETRY_FIRST_S
                    self._registered = False
                log.error(
                    "worker registry: %s is not registered (%s); trying again in %.1f s",
                    self._record.host_id,
                    exc or type(exc).__name__,
                    delay,
                )
                await self._drop_client()
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)

    async def _register_and_keep(self) -> None:
        timeout = self._call_timeout()
        client = await connect_first(self._endpoints, timeout_s=timeout)
        self._client = client
        lease = await asyncio.wait_for(client.lease(self._ttl_s), timeout)
        self._lease = lease
        await self._write(client, lease)
        log.info(
            "worker registry: %s registered (epoch %s, lease TTL %d s)",
            self._record.host_id,
            self._record.epoch,
            self._ttl_s,
        )
        self._registered = True
        keepalive_every = self._ttl_s / 3
        next_keepalive = time.monotonic() + keepalive_every
        last_write = time.monotonic()
        while True:
            now = time.monotonic()
            write_due = math.inf
            if self._record != self._written:
                # Debounced: a burst of slot events is one write; draining is not.
                write_due = now if self._urgent else last_write + MIN_WRITE_INTERVAL_S
            due = min(write_due, next_keepalive)
            if due > now:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), due - now)
                continue
            if write_due <= now:
                await self._write(client, lease)
                last_write = time.monotonic()
            if next_keepalive <= now:
                reply = await asyncio.wait_for(lease.refresh(), timeout)
                if reply is None or reply.TTL <= 0:
                    raise _LeaseLost(f"lease {lease.id:x} expired")
                next_keepalive = time.monotonic() + keepalive_every

    async def _write(self, client: aetcd.Client, lease: aetcd.Lease) -> None:
        record = self._record
        self._urgent = False
        await asyncio.wait_for(
            client.put(self._key, record.to_json(), lease=lease), self._call_timeout()
        )
        self._written = record


async def follow_capacity(pool: SlotPool, registration: WorkerRegistration) -> None:
    """Rewrite the record's capacity after every slot event, until the pool closes."""
    subscription = pool.events.subscribe()
    try:
        registration.update(with_capacity(registration.record, pool.capacity()))
        async for _ in subscription:
            registration.update(with_capacity(registration.record, pool.capacity()))
    finally:
        subscription.close()
