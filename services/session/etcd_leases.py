"""Leases that bound how long a key lives, shared by the keys written meanwhile.

A key that must lapse `ttl_s` after it was last written (a viewer report, an
access grant: etcd_fence.py) is put under an etcd lease that is never kept
alive. Granting one per write would cost a round trip and a lease each time, so
a lease is reused for the writes of its first `reuse_s` seconds: a key written
then lives between `ttl_s - reuse_s` and `ttl_s` after its last write.

The lease belongs to no process: it expires on etcd's count whether the
replica that granted it lives or not. Only elapsed time on this machine's
monotonic clock decides reuse; no wall clock of two machines is ever compared.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

# Grants a lease of the given TTL (whole seconds) and returns its id.
Grant = Callable[[int], Awaitable[int]]


@dataclass(frozen=True)
class _Granted:
    lease_id: int
    # On the monotonic clock, taken before the grant was asked for: the lease
    # cannot have started earlier, so it is never used past its reuse window.
    asked_at: float


class SharedLeases:
    def __init__(
        self,
        grant: Grant,
        ttl_s: float,
        reuse_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= reuse_s < ttl_s:
            raise ValueError(f"reuse window {reuse_s} s must be shorter than the TTL {ttl_s} s")
        self._grant = grant
        self._ttl = max(1, math.ceil(ttl_s))
        self._reuse_s = reuse_s
        self._clock = clock
        self._current: _Granted | None = None
        self._granting = asyncio.Lock()

    async def current(self) -> int:
        """A lease with at least `ttl_s - reuse_s` seconds left."""
        async with self._granting:
            current = self._current
            if current is None or self._clock() - current.asked_at >= self._reuse_s:
                asked_at = self._clock()
                current = _Granted(await self._grant(self._ttl), asked_at)
                self._current = current
            return current.lease_id
