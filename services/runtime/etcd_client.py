"""Reaching etcd through aetcd: endpoint parsing, the first reachable member, and
`EtcdConnection`, a client that moves to another member when its member goes.

aetcd talks to one endpoint per client. The worker registry and its readers
connect to the first member that answers and connect again when their loops fail;
a session service's store, fence, create lock and task claims share one
`EtcdConnection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Coroutine, Iterator, Sequence
from typing import Any

import aetcd
import aetcd.exceptions
import aetcd.rtypes
import grpc

from services.runtime.errors import InvalidArgument, Unavailable

log = logging.getLogger(__name__)


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """ "http://127.0.0.1:2379" or "127.0.0.1:2379" → ("127.0.0.1", 2379)."""
    address = endpoint.split("://", 1)[-1].rstrip("/")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidArgument(f"etcd endpoint {endpoint!r} is not host:port")
    return host, int(port)


async def connect_first(endpoints: Sequence[str], timeout_s: float = 5.0) -> aetcd.Client:
    """A connected client of the first endpoint that answers a status call."""
    errors = []
    for endpoint in endpoints:
        host, port = parse_endpoint(endpoint)
        # aetcd passes the timeout to every gRPC call it makes.
        client = aetcd.Client(host=host, port=port, timeout=timeout_s)
        try:
            await client.connect()
            await client.status()
        except aetcd.exceptions.ClientError as exc:
            errors.append(f"{endpoint}: {exc}")
            await client.close()
            continue
        return client
    raise Unavailable("cannot reach etcd at " + "; ".join(errors or ["no endpoints"]))


# What a member that died (or lost its quorum) answers: its users move to another.
MEMBER_GONE = (aetcd.exceptions.ConnectionFailedError, aetcd.exceptions.ConnectionTimeoutError)
# How long a client left behind by a fail-over stays open: longer than a call may
# take on it (aetcd's per-call timeout, 5 s), so the calls in flight end on their
# own. Closing its channel at once would cancel them: grpc raises CancelledError
# in each caller, and a service handler that gets it never answers (seen as an
# edge waiting out its 90 s deadline on a GetSession, tests/cluster).
RETIRED_CLIENT_GRACE_S = 10.0


async def opened(watch_call: Awaitable[aetcd.rtypes.Watch]) -> aetcd.rtypes.Watch:
    """A watch, opened, unless the task is being cancelled.

    aetcd waits for etcd to confirm a new watch with Python 3.11's `wait_for`, which
    drops a cancellation that arrives with the confirmation
    (services/runtime/cancellation.py): the task would then wait on the watch for
    good, and whoever cancelled it (a replica stopping) with it. Seen as a session
    service's task-owner watch that never stopped (tests/session/test_task_owners.py).
    """
    watch = await watch_call
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        with contextlib.suppress(aetcd.exceptions.ClientError):
            await watch.cancel()
        raise asyncio.CancelledError
    return watch


async def connect_from(
    endpoints: Sequence[str], first: int, timeout_s: float = 5.0
) -> tuple[aetcd.Client, int]:
    """A client of the first member that answers, from `endpoints[first]` on
    (wrapping around), and that member's index."""
    errors = []
    for step in range(len(endpoints)):
        index = (first + step) % len(endpoints)
        try:
            return await connect_first([endpoints[index]], timeout_s), index
        except Unavailable as exc:
            errors.append(exc.message)
    raise Unavailable("; ".join(errors or ["cannot reach etcd: no endpoints"]))


class EtcdConnection:
    """One aetcd client shared by a process's users of etcd, on a member that answers.

    aetcd talks to one endpoint only, so when that member stops answering (killed,
    or cut off from its quorum) every call through it would fail for good. A call
    that fails that way (`errors()`, or `fail_over(client)` from a watch loop) moves
    the connection to the next member that answers, once per failed client; the
    failed member is tried last. Users read `client` at each call, so they move with
    it; leases are the cluster's, so they live on through the new client.
    """

    def __init__(
        self,
        client: aetcd.Client,
        endpoints: Sequence[str],
        endpoint: int = 0,
        retired_grace_s: float = RETIRED_CLIENT_GRACE_S,
    ) -> None:
        self._client = client
        self._endpoints = tuple(endpoints)
        self._endpoint = endpoint
        self._retired_grace_s = retired_grace_s
        self._failing_over = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(cls, endpoints: Sequence[str], timeout_s: float = 5.0) -> EtcdConnection:
        client, index = await connect_from(endpoints, 0, timeout_s)
        return cls(client, endpoints, index)

    @property
    def client(self) -> aetcd.Client:
        return self._client

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """etcd out of reach is Unavailable (503), not an internal error; a member
        that does not answer is left for the next one."""
        client = self._client
        try:
            yield
        except aetcd.exceptions.ClientError as exc:
            if isinstance(exc, MEMBER_GONE):
                self._track(self.fail_over(client))
            raise Unavailable(f"etcd: {exc}") from exc
        except grpc.aio.AioRpcError as exc:
            # aetcd passes some answers on as they came (a transaction's NOT_FOUND
            # for a lease etcd no longer has, say).
            raise Unavailable(f"etcd: {exc.details()}") from exc

    async def fail_over(self, failed: aetcd.Client) -> None:
        """Connect to the next member that answers, unless that happened since
        `failed` was read; nothing changes when none answers."""
        async with self._failing_over:
            if self._client is not failed or len(self._endpoints) < 2:
                return
            try:
                client, index = await connect_from(self._endpoints, self._endpoint + 1)
            except Unavailable as exc:
                log.warning("etcd: no member answers (%s); staying on the current one", exc)
                return
            log.warning(
                "etcd: %s does not answer; now using %s",
                self._endpoints[self._endpoint],
                self._endpoints[index],
            )
            self._client, self._endpoint = client, index
        self._track(self._retire(failed))

    def _track(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _retire(self, failed: aetcd.Client) -> None:
        """Close a client left behind, once the calls in flight on it have ended."""
        try:
            await asyncio.sleep(self._retired_grace_s)
        finally:
            with contextlib.suppress(aetcd.exceptions.ClientError, OSError):
                await failed.close()

    async def close(self) -> None:
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        # Fail-overs stop; retired clients close now (their tasks' `finally`).
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(aetcd.exceptions.ClientError, OSError):
            await self._client.close()
