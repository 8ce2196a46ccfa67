"""Session store in etcd (through aetcd), for several session services.

One key per session under a prefix; the key's mod_revision is the store
revision, and every write is an etcd transaction comparing it. Each session's
step log is one key per step under a sibling prefix, `/baton/steps/<session
id>/<seq, zero-padded>`, put (and the oldest deleted) in the same transaction
as the record's compare-and-swap (services/session/README.md, "Store layout").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

import aetcd
import aetcd.exceptions
import aetcd.utils

from services.runtime.cancellation import check_cancelled, unless_cancelled
from services.runtime.errors import Conflict, Unavailable
from services.runtime.etcd_client import MEMBER_GONE, EtcdConnection, opened
from services.runtime.limits import MAX_STEP_EVENTS_KEPT
from services.session import codec
from services.session.model import FullSession, Session
from services.session.store import StepEvent, Stored

log = logging.getLogger(__name__)

# A watch cut off from etcd tries again after this long, doubling up to the maximum.
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 2.0


# Seqs are zero-padded so that etcd's key order is seq order.
_SEQ_DIGITS = 12


def steps_prefix_of(prefix: str) -> str:
    """The step logs' prefix, a sibling of the sessions' (never under it, where
    listing the sessions would find them): /baton/sessions/ -> /baton/steps/."""
    parent = prefix.rstrip("/").rpartition("/")[0]
    return f"{parent}/steps/"


class EtcdStore:
    def __init__(
        self,
        etcd: EtcdConnection | aetcd.Client,
        prefix: str = "/baton/sessions/",
        steps_kept: int = MAX_STEP_EVENTS_KEPT,
    ) -> None:
        """On `etcd`, shared with the process's other users of etcd (it fails over to
        another member when its member stops answering: etcd_client.py); a bare client
        is one member for good."""
        self._etcd = etcd if isinstance(etcd, EtcdConnection) else EtcdConnection(etcd, ())
        self._prefix = prefix
        self.prefix = prefix
        self.steps_prefix = steps_prefix_of(prefix)
        self._steps_kept = steps_kept
        # Made by connect(): closed with the store.
        self._owned = False

    @classmethod
    async def connect(
        cls,
        endpoints: Sequence[str],
        prefix: str = "/baton/sessions/",
        steps_kept: int = MAX_STEP_EVENTS_KEPT,
    ) -> EtcdStore:
        store = cls(await EtcdConnection.open(endpoints), prefix, steps_kept)
        store._owned = True
        return store

    @property
    def etcd(self) -> EtcdConnection:
        """The store's connection, shared by the audit log (etcd_audit_log.py)."""
        return self._etcd

    def _key(self, session_id: str) -> bytes:
        return (self._prefix + session_id).encode()

    def _log(self, session_id: str) -> bytes:
        """The prefix of the session's step log (the trailing / keeps ids apart)."""
        return f"{self.steps_prefix}{session_id}/".encode()

    def _step_key(self, session_id: str, seq: int) -> bytes:
        return self._log(session_id) + str(seq).zfill(_SEQ_DIGITS).encode()

    async def create(self, session: Session) -> int:
        key = self._key(session.id)
        tx = self._etcd.client.transactions
        with self._etcd.errors():
            succeeded, responses = await self._etcd.client.transaction(
                compare=[tx.create(key) == 0],
                success=[tx.put(key, codec.encode(session))],
                failure=[],
            )
        if not succeeded:
            raise Conflict(f"session {session.id} already exists")
        revision: int = responses[0].response_put.header.revision
        return revision

    async def get(self, session_id: str) -> Stored | None:
        with self._etcd.errors():
            result = await self._etcd.client.get(self._key(session_id))
        if result is None:
            return None
        return Stored(codec.decode(result.value), result.mod_revision)

    async def get_full(self, session_id: str) -> tuple[FullSession, int] | None:
        log = self._log(session_id)
        tx = self._etcd.client.transactions
        with self._etcd.errors():
            # One transaction: the record and its log as of one revision.
            _, (record, steps) = await self._etcd.client.transaction(
                compare=[],
                success=[
                    tx.get(self._key(session_id)),
                    tx.get(log, aetcd.utils.prefix_range_end(log)),
                ],
                failure=[],
            )
        if not record:
            return None
        value, meta = record[0]
        full = FullSession(codec.decode(value), tuple(codec.decode_step(v) for v, _ in steps))
        return full, meta.mod_revision

    async def list_all(self) -> list[Stored]:
        with self._etcd.errors():
            result = await self._etcd.client.get_prefix(self._prefix.encode())
        return [Stored(codec.decode(kv.value), kv.mod_revision) for kv in result]

    async def swap(
        self, session: Session, revision: int, step: StepEvent | None = None
    ) -> int | None:
        key = self._key(session.id)
        tx = self._etcd.client.transactions
        writes = [tx.put(key, codec.encode(session))]
        if step is not None:
            seq = session.step_count
            writes.append(tx.put(self._step_key(session.id, seq), codec.encode_step(step)))
            oldest_kept = seq - self._steps_kept + 1
            if oldest_kept > 1:
                # Everything before the oldest kept: [log/, log/<oldest kept>).
                writes.append(
                    tx.delete(self._log(session.id), self._step_key(session.id, oldest_kept))
                )
        with self._etcd.errors():
            succeeded, responses = await self._etcd.client.transaction(
                compare=[tx.mod(key) == revision],
                success=writes,
                failure=[],
            )
        if not succeeded:
            return None
        new_revision: int = responses[0].response_put.header.revision
        return new_revision

    async def delete(self, session_id: str, revision: int) -> bool:
        key = self._key(session_id)
        tx = self._etcd.client.transactions
        log = self._log(session_id)
        with self._etcd.errors():
            succeeded, _ = await self._etcd.client.transaction(
                compare=[tx.mod(key) == revision],
                success=[tx.delete(key), tx.delete(log, aetcd.utils.prefix_range_end(log))],
                failure=[],
            )
        return bool(succeeded)

    async def watch(self, session_id: str, after_revision: int) -> AsyncIterator[Stored]:
        last = after_revision
        compacted_at = 0
        delay = _RETRY_FIRST_S
        while True:
            check_cancelled()
            client = self._etcd.client
            try:
                if compacted_at:
                    # The changes after `last` are compacted away: the session as
                    # it is now stands in for them, then watching goes on.
                    current = await self.get(session_id)
                    if current is None:
                        return
                    if current.revision > last:
                        last = current.revision
                        yield current
                    last = max(last, compacted_at - 1)
                    compacted_at = 0
                watch = await opened(client.watch(self._key(session_id), start_revision=last + 1))
                try:
                    async for event in watch:
                        if event.kind != "PUT":
                            return  # deleted: there will be no further change
                        stored = Stored(codec.decode(event.kv.value), event.kv.mod_revision)
                        last = stored.revision
                        delay = _RETRY_FIRST_S
                        yield stored
                    return  # the client was closed
                finally:
                    with contextlib.suppress(aetcd.exceptions.ClientError):
                        await watch.cancel()
            except aetcd.exceptions.RevisionCompactedError as exc:
                compacted_at = exc.compacted_revision
            except (aetcd.exceptions.ClientError, Unavailable) as exc:
                unless_cancelled(exc)
                # etcd restarting or out of reach: watch again from the last change seen.
                log.warning("watch of session %s interrupted: %s; retrying", session_id, exc)
                if isinstance(exc, MEMBER_GONE):
                    await self._etcd.fail_over(client)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)

    async def close(self) -> None:
        if self._owned:
            await self._etcd.close()
