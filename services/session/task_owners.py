"""Who follows each running task: exactly one session service replica at a time.

services/session/README.md, "Following tasks across replicas". A replica claims
a session's task before it follows its events, and releases it when it stops.

- `LocalTaskOwners`: one session service (the embedded store): claims are kept
  in memory, and after a restart every unfinished task is ours to follow again.
- `EtcdTaskOwners`: replicas sharing etcd. A claim is the key
  `/baton/task-owners/<session id>`, created only if absent, under the
  replica's own lease (TTL `BATON_TASK_OWNER_TTL_S`, kept alive): when a
  replica dies its claims go with its lease, and every other replica hears of
  it through a watch of the prefix (`released()`) and races to claim and
  re-attach; etcd's create-if-absent lets exactly one of them win.

A replica whose lease lapsed (cut off from etcd longer than the TTL) may for a
moment follow a task that another replica claimed meanwhile: both apply the
same numbered events, and the projection applies each seq once
(task_projection.py), so nothing is doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Protocol

import aetcd
import aetcd.exceptions

from services.runtime.cancellation import check_cancelled, unless_cancelled
from services.runtime.errors import Unavailable
from services.runtime.etcd_client import MEMBER_GONE, EtcdConnection, opened

log = logging.getLogger(__name__)

PREFIX = "/baton/task-owners/"
# What `released()` yields when claims may have been released unseen (the watch
# was cut off): every unfinished task is worth a look.
EVERYTHING = ""
# etcd's answer to a write under a lease it no longer has.
LEASE_NOT_FOUND = "requested lease not found"

_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 2.0


class TaskOwners(Protocol):
    async def start(self) -> None: ...

    async def claim(self, session_id: str) -> bool:
        """Whether this replica now follows the session's task (False: another does)."""
        ...

    async def release(self, session_id: str) -> None:
        """Let go of the session's task (nothing if it is not ours)."""
        ...

    def released(self) -> AsyncIterator[str]:
        """Session ids whose task another replica let go of (or died holding);
        EVERYTHING when some may have been missed."""
        ...

    async def close(self) -> None: ...


class LocalTaskOwners:
    def __init__(self) -> None:
        self._claimed: set[str] = set()
        self._closed = asyncio.Event()

    async def start(self) -> None:
        return None

    async def claim(self, session_id: str) -> bool:
        if session_id in self._claimed:
            return False
        self._claimed.add(session_id)
        return True

    async def release(self, session_id: str) -> None:
        self._claimed.discard(session_id)

    async def released(self) -> AsyncGenerator[str, None]:
        # Nobody else holds tasks here: nothing is ever released by another.
        await self._closed.wait()
        return
        yield  # an async generator that yields nothing

    async def close(self) -> None:
        self._closed.set()


class EtcdTaskOwners:
    def __init__(self, etcd: EtcdConnection, ttl_s: int, replica_id: str | None = None) -> None:
        # Shared with the service's other users of etcd, failing over with them.
        self._etcd = etcd
        self._ttl_s = ttl_s
        self.replica_id = replica_id or uuid.uuid4().hex
        self._lease: int | None = None
        self._lease_ready = asyncio.Event()
        self._released: asyncio.Queue[str] = asyncio.Queue(maxsize=1024)
        self._replacing = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    def _key(self, session_id: str) -> bytes:
        return (PREFIX + session_id).encode()

    def _call_timeout(self) -> float:
        # A call slower than a third of the TTL would let the lease lapse.
        return max(0.5, self._ttl_s / 3)

    async def start(self) -> None:
        """Take a lease; Unavailable when no etcd member answers."""
        await self._new_lease()
        self._tasks = [
            asyncio.create_task(self._keep_lease(), name="task-owner-lease"),
            asyncio.create_task(self._watch(), name="task-owner-watch"),
        ]

    async def _new_lease(self) -> None:
        with self._etcd.errors():
            lease = await asyncio.wait_for(
                self._etcd.client.lease(self._ttl_s), self._call_timeout()
            )
        self._lease = int(lease.id)
        self._lease_ready.set()
        log.info("task owners: replica %s holds lease %x", self.replica_id, lease.id)

    async def claim(self, session_id: str) -> bool:
        if self._stopped:
            raise Unavailable("the task owners are stopped")
        lease = await self._current_lease()
        try:
            return await self._claim_under(session_id, lease)
        except Unavailable as exc:
            # Our lease lapsed unseen (cut off from etcd longer than its TTL, a
            # keep-alive lost in a fail-over): take a new one and ask once more.
            if LEASE_NOT_FOUND not in exc.message:
                raise
        await self._replace_lease(lease)
        return await self._claim_under(session_id, await self._current_lease())

    async def _current_lease(self) -> int | None:
        try:
            # A new lease is being taken: not for longer than a call.
            await asyncio.wait_for(self._lease_ready.wait(), self._call_timeout())
        except TimeoutError:
            raise Unavailable("the task owners have no lease: etcd does not answer") from None
        return self._lease

    async def _claim_under(self, session_id: str, lease: int | None) -> bool:
        key = self._key(session_id)
        client = self._etcd.client
        tx = client.transactions
        try:
            with self._etcd.errors():
                succeeded, _ = await asyncio.wait_for(
                    client.transaction(
                        compare=[tx.create(key) == 0],
                        success=[tx.put(key, self.replica_id.encode(), lease=lease)],
                        failure=[],
                    ),
                    self._call_timeout(),
                )
        except TimeoutError:
            raise Unavailable(f"cannot claim the task of session {session_id}") from None
        return bool(succeeded)

    async def _replace_lease(self, lapsed: int | None) -> None:
        """A new lease instead of `lapsed`, unless another caller replaced it already."""
        async with self._replacing:
            if self._lease != lapsed:
                return
            # Our claims are gone: others adopt those tasks (see the module doc).
            log.warning("task owners: lease %x expired; taking a new one", lapsed or 0)
            self._lease_ready.clear()
            await self._new_lease()

    async def release(self, session_id: str) -> None:
        if self._stopped:
            return
        key = self._key(session_id)
        client = self._etcd.client
        tx = client.transactions
        # Only our own claim: after our lease lapsed the key may be another's.
        with contextlib.suppress(Unavailable, TimeoutError), self._etcd.errors():
            await asyncio.wait_for(
                client.transaction(
                    compare=[tx.value(key) == self.replica_id.encode()],
                    success=[tx.delete(key)],
                    failure=[],
                ),
                self._call_timeout(),
            )

    async def released(self) -> AsyncGenerator[str, None]:
        while True:
            yield await self._released.get()

    def _tell(self, session_id: str) -> None:
        try:
            self._released.put_nowait(session_id)
        except asyncio.QueueFull:
            # Too many at once: one look at everything covers them all.
            while not self._released.empty():
                self._released.get_nowait()
            self._released.put_nowait(EVERYTHING)

    async def _keep_lease(self) -> None:
        while True:
            check_cancelled()
            await asyncio.sleep(self._ttl_s / 3)
            try:
                assert self._lease is not None
                with self._etcd.errors():
                    reply = await asyncio.wait_for(
                        self._etcd.client.refresh_lease(self._lease), self._call_timeout()
                    )
                if reply is None or reply.TTL <= 0:
                    await self._replace_lease(self._lease)
            except (Unavailable, TimeoutError) as exc:
                unless_cancelled(exc)
                log.warning("task owners: keeping the lease alive failed: %s", exc)

    async def _watch(self) -> None:
        delay = _RETRY_FIRST_S
        first = True
        while True:
            check_cancelled()
            client = self._etcd.client
            try:
                watch = await opened(client.watch_prefix(PREFIX.encode()))
                if not first:
                    # Deletes made while we were not watching: look at everything.
                    self._tell(EVERYTHING)
                first = False
                try:
                    async for event in watch:
                        delay = _RETRY_FIRST_S
                        if event.kind == "DELETE":
                            self._tell(event.kv.key.decode()[len(PREFIX) :])
                finally:
                    with contextlib.suppress(aetcd.exceptions.ClientError):
                        await watch.cancel()
                raise Unavailable("the watch of the task owners ended")
            except Exception as exc:
                unless_cancelled(exc)
                log.warning(
                    "task owners: watch interrupted (%s); again in %.1f s",
                    exc or type(exc).__name__,
                    delay,
                )
                if isinstance(exc, MEMBER_GONE):
                    await self._etcd.fail_over(client)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)

    async def close(self) -> None:
        """Stop, and revoke the lease: other replicas adopt our tasks at once."""
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        lease, self._lease = self._lease, None
        if lease is not None:
            with contextlib.suppress(Unavailable, TimeoutError), self._etcd.errors():
                await asyncio.wait_for(self._etcd.client.revoke_lease(lease), self._call_timeout())
