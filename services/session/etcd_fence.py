"""EtcdControlFence: the handoff fence shared by session-service replicas.

An edge may report its viewers to one replica while the control change that
resumes the agent runs on another (services/session/README.md, "The handoff
fence"). So what the in-process fence (control_fence.py) keeps lives in etcd,
one key per session, edge and kind (fence_keys.py), and `wait` watches the
session's keys until every edge holding a gate acknowledged the new version or
the bounded wait passed.

Keys lapse under leases that nobody keeps alive (etcd_leases.py): a viewer
entry lives the viewer lease after the edge's last report whichever replica
took it, and a replica that dies takes nothing with it. Only etcd counts down
a lease; no wall clocks of different machines are compared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import aetcd
import aetcd.exceptions

from services.runtime.cancellation import check_cancelled, unless_cancelled
from services.runtime.errors import Unavailable
from services.runtime.etcd_client import MEMBER_GONE, EtcdConnection, opened
from services.session import fence_keys
from services.session.control_fence import ACCESS_GRACE_S
from services.session.etcd_leases import SharedLeases

log = logging.getLogger(__name__)

# A lease is reused by the writes of this share of its TTL (etcd_leases.py): a
# viewer entry lives at least 2/3 of the viewer lease after its edge's last
# report, well beyond the edges' 30 s report interval at the default 90 s.
_REUSE_SHARE = 1 / 3
# A watch of the fence cut off from etcd is set up again after this long.
_RETRY_S = 0.1


class EtcdControlFence:
    def __init__(
        self,
        etcd: EtcdConnection | aetcd.Client,
        viewer_lease_s: float,
        prefix: str = fence_keys.PREFIX,
    ) -> None:
        # Shared with the service's other users of etcd, failing over with them.
        self._etcd = etcd if isinstance(etcd, EtcdConnection) else EtcdConnection(etcd, ())
        self._prefix = prefix

        async def grant(ttl: int) -> int:
            lease_id: int = (await self._etcd.client.lease(ttl)).id
            return lease_id

        self._viewer_leases = SharedLeases(grant, viewer_lease_s, viewer_lease_s * _REUSE_SHARE)
        self._access_leases = SharedLeases(grant, ACCESS_GRACE_S, ACCESS_GRACE_S * _REUSE_SHARE)

    async def access_granted(self, session_id: str, edge_id: str) -> None:
        key = fence_keys.key(self._prefix, session_id, edge_id, fence_keys.ACCESS)
        with self._etcd.errors():
            await self._etcd.client.put(key, b"", lease=await self._access_leases.current())

    async def viewers_changed(self, session_id: str, edge_id: str, delta: int) -> None:
        key = fence_keys.key(self._prefix, session_id, edge_id, fence_keys.VIEWERS)
        await self._update(key, lambda raw: fence_keys.viewers_after(raw, delta))

    async def acknowledge(self, session_id: str, edge_id: str, version: int) -> None:
        key = fence_keys.key(self._prefix, session_id, edge_id, fence_keys.ACK)
        await self._update(key, lambda raw: fence_keys.acknowledged_after(raw, version))

    async def _update(self, key: bytes, change: Callable[[bytes | None], bytes | None]) -> None:
        """Compare-and-swap `key` to `change(value)` under the current viewer lease
        (refreshing its life); replicas writing the same key at once retry."""
        tx = self._etcd.client.transactions
        with self._etcd.errors():
            while True:
                current = await self._etcd.client.get(key)
                value = change(None if current is None else current.value)
                if value is None:
                    return
                lease = await self._viewer_leases.current()
                # mod_revision 0: the key must still be absent.
                revision = 0 if current is None else current.mod_revision
                succeeded, _ = await self._etcd.client.transaction(
                    compare=[tx.mod(key) == revision],
                    success=[tx.put(key, value, lease=lease)],
                    failure=[],
                )
                if succeeded:
                    return

    async def wait(self, session_id: str, version: int, timeout_s: float) -> list[str]:
        session_keys = fence_keys.session_prefix(self._prefix, session_id)
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            entries, revision = await self._list(session_keys)
        except Unavailable as exc:
            # Which edges hold gates is unknown: wait as long as for an edge
            # that never answers, then let the agent go on (bounded, like it).
            log.warning("session %s: control fence unreadable: %s", session_id, exc.message)
            await asyncio.sleep(max(0.0, deadline - asyncio.get_running_loop().time()))
            return []
        waiting = fence_keys.waiting_on(entries, version)
        if not waiting:
            return []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self._until_acknowledged(session_keys, version, waiting, revision)
        late = sorted(waiting)
        if late:
            await self._forget_edges(session_keys, {e: entries[e] for e in late})
        return late

    async def _list(self, session_keys: str) -> tuple[dict[str, fence_keys.EdgeEntry], int]:
        with self._etcd.errors():
            listing = await self._etcd.client.get_prefix(session_keys.encode())
        kvs = ((kv.key, kv.value, kv.mod_revision) for kv in listing)
        return fence_keys.read_entries(session_keys, kvs), int(listing.header.revision)

    async def _until_acknowledged(
        self, session_keys: str, version: int, waiting: set[str], revision: int
    ) -> None:
        """Return once no edge in `waiting` is left: each acknowledged `version`."""
        while waiting:
            check_cancelled()
            client = self._etcd.client
            try:
                watch = await opened(
                    client.watch_prefix(session_keys.encode(), start_revision=revision + 1)
                )
                try:
                    async for event in watch:
                        revision = int(event.kv.mod_revision)
                        parsed = fence_keys.parse(session_keys, event.kv.key)
                        if event.kind != "PUT" or parsed is None or parsed[1] != fence_keys.ACK:
                            continue
                        if fence_keys.number(event.kv.value, -1) >= version:
                            waiting.discard(parsed[0])
                            if not waiting:
                                return
                finally:
                    with contextlib.suppress(aetcd.exceptions.ClientError):
                        await watch.cancel()
                raise Unavailable("the watch of the control fence ended")
            except (aetcd.exceptions.ClientError, Unavailable) as exc:
                unless_cancelled(exc)
                # Cut off or compacted: read the acknowledgements as they are now,
                # then watch on from there.
                log.warning("control fence: watch of %s interrupted: %s", session_keys, exc)
                if isinstance(exc, MEMBER_GONE):
                    await self._etcd.fail_over(client)
                await asyncio.sleep(_RETRY_S)
                with contextlib.suppress(Unavailable):
                    entries, revision = await self._list(session_keys)
                    waiting.intersection_update(fence_keys.waiting_on(entries, version))

    async def _forget_edges(self, session_keys: str, late: dict[str, fence_keys.EdgeEntry]) -> None:
        """Edges that did not acknowledge in time are treated as gone: their
        viewers stop counting until they report again (a report made since the
        wait began is kept: the compare fails)."""
        tx = self._etcd.client.transactions
        for edge_id, entry in late.items():
            compare, delete = [], []
            for kind, revision in (
                (fence_keys.VIEWERS, entry.viewers_revision),
                (fence_keys.ACCESS, entry.access_revision),
            ):
                if revision:
                    key = fence_keys.edge_key(session_keys, edge_id, kind)
                    compare.append(tx.mod(key) == revision)
                    delete.append(tx.delete(key))
            with contextlib.suppress(aetcd.exceptions.ClientError):
                await self._etcd.client.transaction(compare=compare, success=delete, failure=[])

    def forget(self, session_id: str) -> None:
        """Nothing to do: an ended session's keys lapse with their leases."""
