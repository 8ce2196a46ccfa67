"""Per-user request rate at the edge: a token bucket per user.

Each user's bucket holds up to `burst` requests and refills at `per_s`; a
request finding it empty is refused with 429 and a Retry-After of the time
until a request is allowed again. Operators are not limited (services/edge/
README.md, "Limits"). Pure logic with an injected clock; the edge calls
`check` for every REST request, Socket.IO event and stream connection.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from services.edge.auth import Principal
from services.runtime.errors import ResourceExhausted

Clock = Callable[[], float]

# Buckets kept at most; the least recently used go first (a full bucket is
# what a forgotten user gets anyway, so forgetting one never loosens a limit
# for longer than one refill).
MAX_BUCKETS = 10_000


@dataclass
class TokenBucket:
    per_s: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take one token; 0 when allowed, else the seconds until one is there."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.per_s)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.per_s


class RateLimiter:
    def __init__(self, per_s: float, burst: int, clock: Clock = time.monotonic) -> None:
        # per_s 0: no limit.
        self._per_s = per_s
        self._burst = max(1, burst)
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, principal: Principal) -> None:
        """Count one request of `principal`; ResourceExhausted (429) when over the rate."""
        if principal.operator or self._per_s <= 0:
            return
        now = self._clock()
        bucket = self._buckets.pop(principal.user_id, None)
        if bucket is None:
            bucket = TokenBucket(self._per_s, self._burst, self._burst, now)
        self._buckets[principal.user_id] = bucket
        while len(self._buckets) > MAX_BUCKETS:
            self._buckets.popitem(last=False)
        wait = bucket.take(now)
        if wait:
            raise ResourceExhausted(
                f"user {principal.user_id} is over the rate limit of "
                f"{self._per_s:g} requests per second (burst {self._burst})",
                retry_after_s=max(1, math.ceil(wait)),
            )
