"""The worker hosts registered in etcd, as a `WorkerDirectory` (README.md, "Cluster").

It lists `/baton/workers/` once, then watches the prefix from the listing's
revision. Each live host gets one pair of gRPC channels, closed when the host's
key goes (its lease expired or it was revoked) or when another epoch of the host
replaces it; either way the ended registration is reported by `lost_hosts()`.
A failed watch (etcd restarting, a member lost, a compacted revision) lists the
prefix again and watches on from there: hosts that went meanwhile are reported
lost then, and an etcd outage alone never makes a host lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import aetcd
import aetcd.exceptions
import grpc

from services.runtime.cancellation import check_cancelled, unless_cancelled
from services.runtime.errors import InvalidArgument, Unavailable
from services.runtime.etcd_client import connect_first, opened
from services.runtime.internal_auth import InternalToken
from services.runtime.worker_registry import PREFIX, WorkerRecord
from services.session.grpc_workers import grpc_worker_host
from services.session.workers import HostView, LostHost, WorkerHost

log = logging.getLogger(__name__)

_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 2.0
# etcd calls are short; a member that does not answer within this is skipped.
_CALL_TIMEOUT_S = 3.0


@dataclass
class _Live:
    record: WorkerRecord
    host: WorkerHost
    channels: list[grpc.aio.Channel]


class _LostFeed:
    """Lost hosts reported after it was made, until the directory closes."""

    def __init__(self, feeds: set[_LostFeed]) -> None:
        self._feeds = feeds
        self._queue: asyncio.Queue[LostHost | None] = asyncio.Queue()
        feeds.add(self)

    def __aiter__(self) -> _LostFeed:
        return self

    async def __anext__(self) -> LostHost:
        item = await self._queue.get()
        if item is None:
            self._feeds.discard(self)
            raise StopAsyncIteration
        return item

    def put(self, item: LostHost | None) -> None:
        self._queue.put_nowait(item)

    async def aclose(self) -> None:
        self._feeds.discard(self)


class EtcdWorkerDirectory:
    def __init__(self, endpoints: Sequence[str], token: InternalToken) -> None:
        self._endpoints = tuple(endpoints)
        self._token = token
        self._client: aetcd.Client | None = None
        self._live: dict[str, _Live] = {}
        self._feeds: set[_LostFeed] = set()
        self._task: asyncio.Task[None] | None = None

    # ---- the WorkerDirectory port

    def live_hosts(self) -> list[HostView]:
        return [HostView(live.host, live.record) for _, live in sorted(self._live.items())]

    def host(self, host_id: str) -> WorkerHost | None:
        live = self._live.get(host_id)
        return live.host if live is not None else None

    def record(self, host_id: str) -> WorkerRecord | None:
        live = self._live.get(host_id)
        return live.record if live is not None else None

    def lost_hosts(self) -> AsyncIterator[LostHost]:
        # Registered now, not at the first iteration: nothing lost in between is missed.
        return _LostFeed(self._feeds)

    # ---- life cycle

    async def start(self) -> None:
        """List the registered hosts, then follow changes in the background.

        Unavailable when no etcd endpoint answers: a session service without its
        registry cannot place anything, and says so at start-up.
        """
        self._client = await connect_first(self._endpoints, _CALL_TIMEOUT_S)
        revision = await self._relist(self._client)
        self._task = asyncio.create_task(self._follow(revision), name="worker-directory")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for feed in list(self._feeds):
            feed.put(None)
        self._feeds.clear()
        live, self._live = self._live, {}
        for entry in live.values():
            await _close_channels(entry.channels)
        await self._drop_client()

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(aetcd.exceptions.ClientError, OSError):
                await client.close()

    # ---- following the registry

    async def _follow(self, revision: int | None) -> None:
        delay = _RETRY_FIRST_S
        while True:
            check_cancelled()
            try:
                if self._client is None:
                    self._client = await connect_first(self._endpoints, _CALL_TIMEOUT_S)
                if revision is None:
                    revision = await self._relist(self._client)
                    log.info("worker directory: following the registry again")
                watch = await opened(
                    self._client.watch_prefix(PREFIX.encode(), start_revision=revision + 1)
                )
                try:
                    async for event in watch:
                        revision = int(event.kv.mod_revision)
                        await self._apply(event)
                        check_cancelled()
                        delay = _RETRY_FIRST_S
                finally:
                    with contextlib.suppress(aetcd.exceptions.ClientError):
                        await watch.cancel()
                # The stream ended without an error: etcd went away under it.
                raise Unavailable("the watch of the worker registry ended")
            # Whatever went wrong, list again and watch on (never a silent stop).
            except Exception as exc:
                unless_cancelled(exc)
                # Compacted, cut off, or a member gone: list again (on another member
                # if need be) rather than trust a watch resumed from a revision.
                log.warning(
                    "worker directory: watch of %s interrupted (%s); listing again in %.1f s",
                    PREFIX,
                    exc or type(exc).__name__,
                    delay,
                )
                revision = None
                await self._drop_client()
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)

    async def _relist(self, client: aetcd.Client) -> int:
        """Make the live hosts what etcd holds now; the revision of that view."""
        result = await client.get_prefix(PREFIX.encode())
        seen: set[str] = set()
        for kv in result:
            host_id = kv.key.decode()[len(PREFIX) :]
            seen.add(host_id)
            await self._put(host_id, kv.value)
        for host_id in set(self._live) - seen:
            await self._remove(host_id)
        return int(result.header.revision)

    async def _apply(self, event: aetcd.rtypes.Event) -> None:
        host_id = event.kv.key.decode()[len(PREFIX) :]
        if event.kind == "DELETE":
            await self._remove(host_id)
        else:
            await self._put(host_id, event.kv.value)

    async def _put(self, host_id: str, raw: bytes) -> None:
        try:
            record = WorkerRecord.from_json(raw)
        except InvalidArgument as exc:
            log.error("worker directory: ignoring %s%s: %s", PREFIX, host_id, exc)
            return
        if record.host_id != host_id:
            log.error(
                "worker directory: ignoring %s%s: it names host %r", PREFIX, host_id, record.host_id
            )
            return
        current = self._live.get(host_id)
        if current is not None:
            same_addresses = (
                current.record.display_address == record.display_address
                and current.record.automation_address == record.automation_address
            )
            if current.record.epoch == record.epoch and same_addresses:
                current.record = record
                return
            if current.record.epoch != record.epoch:
                await self._remove(host_id)
            else:
                # Same epoch at new addresses: only the channels change.
                del self._live[host_id]
                await _close_channels(current.channels)
        host, channels = grpc_worker_host(
            host_id, record.display_address, record.automation_address, self._token
        )
        self._live[host_id] = _Live(record, host, channels)
        log.info(
            "worker directory: host %s (epoch %s) at %s, %d/%d slots held%s",
            host_id,
            record.epoch,
            record.display_address,
            record.held,
            record.max_slots,
            ", draining" if record.draining else "",
        )

    async def _remove(self, host_id: str) -> None:
        live = self._live.pop(host_id, None)
        if live is None:
            return
        log.warning("worker directory: host %s (epoch %s) lost", host_id, live.record.epoch)
        lost = LostHost(host_id, live.record.epoch)
        for feed in list(self._feeds):
            feed.put(lost)
        await _close_channels(live.channels)


async def _close_channels(channels: list[grpc.aio.Channel]) -> None:
    for channel in channels:
        await channel.close(None)
