"""EtcdUserLock: one create per user at a time across session-service replicas.

The per-user quota counts, then stores (launcher.py); with replicas sharing etcd,
that pair runs under a key `<prefix><user_id>` created only when absent, under a
lease of its own. The holder revokes the lease when done, which deletes the key;
the others wait for that deletion. A replica that dies holding the key frees it
when the lease runs out (LEASE_TTL_S). The holder may hold it for HOLD_S at most,
counted from before the lease was granted: it lets go (the create is refused
with Unavailable) well before etcd could expire the lease under it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aetcd
import aetcd.exceptions

from services.runtime.errors import Unavailable
from services.runtime.etcd_client import EtcdConnection

PREFIX = "/baton/locks/create/"
LEASE_TTL_S = 15
# Below the TTL with margin for the rates of two clocks and a grant's round trip.
HOLD_S = 10.0
# Longest wait for another create of the same user to finish.
WAIT_S = 10.0


class EtcdUserLock:
    def __init__(
        self,
        etcd: EtcdConnection | aetcd.Client,
        prefix: str = PREFIX,
        lease_ttl_s: int = LEASE_TTL_S,
        hold_s: float = HOLD_S,
        wait_s: float = WAIT_S,
    ) -> None:
        if not 0 < hold_s < lease_ttl_s:
            raise ValueError(f"hold {hold_s} s must be shorter than the lease {lease_ttl_s} s")
        # Shared with the service's other users of etcd, failing over with them.
        self._etcd = etcd if isinstance(etcd, EtcdConnection) else EtcdConnection(etcd, ())
        self._prefix = prefix
        self._lease_ttl_s = lease_ttl_s
        self._hold_s = hold_s
        self._wait_s = wait_s

    @contextlib.asynccontextmanager
    async def hold(self, user_id: str) -> AsyncIterator[None]:
        key = (self._prefix + user_id).encode()
        loop = asyncio.get_running_loop()
        with self._etcd.errors():
            lease_id, asked_at = await self._acquire(key, loop.time() + self._wait_s)
        try:
            try:
                async with asyncio.timeout_at(asked_at + self._hold_s):
                    yield
            except TimeoutError:
                raise Unavailable(
                    f"creating a session of {user_id} took over {self._hold_s:g} s"
                ) from None
        finally:
            # Deletes the key: the next create of the user goes on at once.
            with contextlib.suppress(aetcd.exceptions.ClientError):
                await self._etcd.client.revoke_lease(lease_id)

    async def _acquire(self, key: bytes, deadline: float) -> tuple[int, float]:
        """(lease id, when it was asked for) once `key` is ours."""
        loop = asyncio.get_running_loop()
        tx = self._etcd.client.transactions
        while True:
            asked_at = loop.time()
            lease_id: int = (await self._etcd.client.lease(self._lease_ttl_s)).id
            succeeded, responses = await self._etcd.client.transaction(
                compare=[tx.create(key) == 0],
                success=[tx.put(key, str(lease_id).encode(), lease=lease_id)],
                failure=[tx.get(key)],
            )
            if succeeded:
                return lease_id, asked_at
            await self._etcd.client.revoke_lease(lease_id)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Unavailable(f"{key.decode()} is held by another create; try again")
            # Wait for the holder's key to go (revoked, or its lease expired).
            [(_, held)] = responses[0]
            with contextlib.suppress(aetcd.exceptions.WatchTimeoutError):
                await self._etcd.client.watch_once(
                    key,
                    timeout=remaining,
                    start_revision=held.header.revision + 1,
                    kind=aetcd.rtypes.EventKind.DELETE,
                )
