"""UserLock: one create at a time per user, around counting and storing.

The per-user session quota (launcher.py) counts the user's live sessions, then
stores the new one; two creates counting at once could both pass. The lock is
held only around that count and store. `LocalUserLock` serializes the creates of
this process (the embedded store is this process's alone); `EtcdUserLock`
(etcd_user_lock.py) serializes them across session-service replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol


class UserLock(Protocol):
    def hold(self, user_id: str) -> AbstractAsyncContextManager[None]:
        """Held by one create of `user_id` at a time (Unavailable when it cannot be had)."""
        ...


class LocalUserLock:
    """One lock for every user of this process: a count and a store take
    milliseconds, so creates of different users barely wait for each other."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def hold(self, user_id: str) -> AsyncIterator[None]:
        async with self._lock:
            yield
