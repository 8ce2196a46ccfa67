"""What session-service replicas must share beyond the store: the handoff fence
and the per-user create lock. In etcd when it is configured (etcd_fence.py,
etcd_user_lock.py); otherwise this process's own (the embedded store serves one
process)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.runtime.etcd_client import connect_first
from services.session.control_fence import ControlFence, MemoryControlFence
from services.session.etcd_fence import EtcdControlFence
from services.session.etcd_user_lock import EtcdUserLock
from services.session.settings import SessionSettings
from services.session.user_lock import LocalUserLock, UserLock


async def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Coordination:
    fence: ControlFence
    user_lock: UserLock
    close: Callable[[], Awaitable[None]] = _nothing


async def open_coordination(settings: SessionSettings) -> Coordination:
    if not settings.etcd_endpoints:
        return Coordination(MemoryControlFence(settings.viewer_lease_s), LocalUserLock())
    client = await connect_first(settings.etcd_endpoints)
    return Coordination(
        EtcdControlFence(client, settings.viewer_lease_s), EtcdUserLock(client), client.close
    )
