"""What session-service replicas share beyond the store: the handoff fence, the
per-user create lock and the claims on the tasks they follow. In etcd when it is
configured (etcd_fence.py, etcd_user_lock.py, task_owners.py), over the one
connection the service's store uses too; otherwise this process's own (the
embedded store serves one process)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.runtime.etcd_client import EtcdConnection
from services.session.control_fence import ControlFence, MemoryControlFence
from services.session.etcd_fence import EtcdControlFence
from services.session.etcd_user_lock import EtcdUserLock
from services.session.settings import SessionSettings
from services.session.task_owners import EtcdTaskOwners, LocalTaskOwners, TaskOwners
from services.session.user_lock import LocalUserLock, UserLock


async def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Coordination:
    fence: ControlFence
    user_lock: UserLock
    owners: TaskOwners
    # The service's etcd connection (None: no etcd), for its store as well.
    etcd: EtcdConnection | None = None
    close: Callable[[], Awaitable[None]] = _nothing


async def open_coordination(settings: SessionSettings) -> Coordination:
    if not settings.etcd_endpoints:
        return Coordination(
            MemoryControlFence(settings.viewer_lease_s), LocalUserLock(), LocalTaskOwners()
        )
    etcd = await EtcdConnection.open(settings.etcd_endpoints)
    owners = EtcdTaskOwners(etcd, settings.task_owner_ttl_s)
    try:
        await owners.start()
    except BaseException:
        await etcd.close()
        raise

    async def close() -> None:
        await owners.close()
        await etcd.close()

    return Coordination(
        EtcdControlFence(etcd, settings.viewer_lease_s),
        EtcdUserLock(etcd),
        owners,
        etcd,
        close,
    )
