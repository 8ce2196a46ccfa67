"""The audit log in etcd, beside the sessions (audit_log.py has the contract).

One key per event, `<parent>/audit/<epoch micros>-<count>-<replica>` (zero-padded), a
sibling of the sessions' prefix like the step logs (under it, listing the
sessions would find them): etcd's key order is then time order, so `since` is
a range read from the moment's key on, in pages, and `forget_before` one range
delete. The count keeps one replica's events of one microsecond in the order
appended; the replica's random id keeps different replicas' apart.
"""

from __future__ import annotations

import secrets
from datetime import datetime

import aetcd
import aetcd.utils

from services.runtime.etcd_client import EtcdConnection
from services.session.audit_log import AuditEvent, epoch_micros

_MICROS_DIGITS = 20
_COUNT_DIGITS = 12
# Keys read per etcd request while looking for `limit` events of one session.
_PAGE = 500


def audit_prefix_of(sessions_prefix: str) -> str:
    """/baton/sessions/ -> /baton/audit/."""
    parent = sessions_prefix.rstrip("/").rpartition("/")[0]
    return f"{parent}/audit/"


class EtcdAuditLog:
    def __init__(self, etcd: EtcdConnection, prefix: str = "/baton/audit/") -> None:
        """On the session store's connection (closed with the store)."""
        self._etcd = etcd
        self.prefix = prefix
        self._replica = secrets.token_hex(6)
        self._appended = 0

    def _moment_key(self, moment: datetime) -> bytes:
        return f"{self.prefix}{str(max(0, epoch_micros(moment))).zfill(_MICROS_DIGITS)}".encode()

    async def append(self, event: AuditEvent) -> None:
        self._appended += 1
        # The count keeps this replica's events of one microsecond in order.
        tail = f"-{str(self._appended).zfill(_COUNT_DIGITS)}-{self._replica}".encode()
        key = self._moment_key(event.at) + tail
        with self._etcd.errors():
            await self._etcd.client.put(key, event.encode())

    async def since(
        self, moment: datetime, session_id: str | None = None, limit: int = 1000
    ) -> list[AuditEvent]:
        found: list[AuditEvent] = []
        start = self._moment_key(moment)
        end = aetcd.utils.prefix_range_end(self.prefix.encode())
        while len(found) < limit:
            client = self._etcd.client
            # aetcd's get_range has no limit: its request, with one, keeps a read bounded.
            request = client._build_get_range_request(key=start, range_end=end)
            request.limit = _PAGE if session_id is not None else limit - len(found)
            with self._etcd.errors():
                response = await client.kvstub.Range(
                    request, timeout=client._timeout, metadata=client.metadata
                )
            for kv in response.kvs:
                event = AuditEvent.decode(kv.value)
                if session_id is None or event.session_id == session_id:
                    found.append(event)
                    if len(found) >= limit:
                        break
            if not response.more or not response.kvs:
                break
            start = bytes(response.kvs[-1].key) + b"\0"
        return found

    async def forget_before(self, moment: datetime) -> int:
        with self._etcd.errors():
            result = await self._etcd.client.delete_range(
                self.prefix.encode(), self._moment_key(moment)
            )
        return int(result.deleted)
