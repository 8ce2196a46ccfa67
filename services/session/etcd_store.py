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
from collections.abc import AsyncIterator, Iterator, Sequence

import aetcd
import aetcd.exceptions
import aetcd.utils

from services.runtime.errors import Conflict, Unavailable
from services.runtime.etcd_client import connect_first
from services.runtime.limits import MAX_STEP_EVENTS_KEPT
from services.session import codec
from services.session.model import FullSession, Session
from services.session.store import StepEvent, Stored

log = logging.getLogger(__name__)

# A watch cut off from etcd tries again after this long, doubling up to the maximum.
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 2.0


# What a member that died (or lost its quorum) answers: the store moves to another.
_MEMBER_GONE = (aetcd.exceptions.ConnectionFailedError, aetcd.exceptions.ConnectionTimeoutError)


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
        client: aetcd.Client,
        prefix: str = "/baton/sessions/",
        endpoints: Sequence[str] = (),
        endpoint: int = 0,
        steps_kept: int = MAX_STEP_EVENTS_KEPT,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self.steps_prefix = steps_prefix_of(prefix)
        self._steps_kept = steps_kept
        # Every member, and the one `client` talks to: aetcd talks to one
        # endpoint only, so when that member goes the store fails over itself.
        self._endpoints = tuple(endpoints)
        self._endpoint = endpoint
        self._failing_over = asyncio.Lock()

    @classmethod
    async def connect(
        cls,
        endpoints: Sequence[str],
        prefix: str = "/baton/sessions/",
        steps_kept: int = MAX_STEP_EVENTS_KEPT,
    ) -> EtcdStore:
        client, index = await _connect_from(endpoints, 0)
        return cls(client, prefix, endpoints, index, steps_kept)

    @contextlib.contextmanager
    def _unavailable_on_etcd_errors(self) -> Iterator[None]:
        """etcd out of reach is Unavailable (503), not an internal error; a
        member that does not answer is left for the next one (`_fail_over`)."""
        client = self._client
        try:
            yield
        except aetcd.exceptions.ClientError as exc:
            if isinstance(exc, _MEMBER_GONE):
                self._schedule_fail_over(client)
            raise Unavailable(f"etcd: {exc}") from exc

    def _schedule_fail_over(self, client: aetcd.Client) -> None:
        task = asyncio.get_running_loop().create_task(self._fail_over(client))
        _fail_overs.add(task)
        task.add_done_callback(_fail_overs.discard)

    async def _fail_over(self, failed: aetcd.Client) -> None:
        """Connect to the next member that answers (once per failed client);
        the failed member is tried last. Nothing changes when none answers."""
        async with self._failing_over:
            if self._client is not failed or len(self._endpoints) < 2:
                return
            try:
                client, index = await _connect_from(self._endpoints, self._endpoint + 1)
            except Unavailable as exc:
                log.warning("etcd: no member answers (%s); staying on the current one", exc)
                return
            log.warning(
                "etcd: %s does not answer; now using %s",
                self._endpoints[self._endpoint],
                self._endpoints[index],
            )
            self._client, self._endpoint = client, index
        with contextlib.suppress(aetcd.exceptions.ClientError):
            await failed.close()

    def _key(self, session_id: str) -> bytes:
        return (self._prefix + session_id).encode()

    def _log(self, session_id: str) -> bytes:
        """The prefix of the session's step log (the trailing / keeps ids apart)."""
        return f"{self.steps_prefix}{session_id}/".encode()

    def _step_key(self, session_id: str, seq: int) -> bytes:
        return self._log(session_id) + str(seq).zfill(_SEQ_DIGITS).encode()

    async def create(self, session: Session) -> int:
        key = self._key(session.id)
        tx = self._client.transactions
        with self._unavailable_on_etcd_errors():
            succeeded, responses = await self._client.transaction(
                compare=[tx.create(key) == 0],
                success=[tx.put(key, codec.encode(session))],
                failure=[],
            )
        if not succeeded:
            raise Conflict(f"session {session.id} already exists")
        revision: int = responses[0].response_put.header.revision
        return revision

    async def get(self, session_id: str) -> Stored | None:
        with self._unavailable_on_etcd_errors():
            result = await self._client.get(self._key(session_id))
        if result is None:
            return None
        return Stored(codec.decode(result.value), result.mod_revision)

    async def get_full(self, session_id: str) -> tuple[FullSession, int] | None:
        log = self._log(session_id)
        tx = self._client.transactions
        with self._unavailable_on_etcd_errors():
            # One transaction: the record and its log as of one revision.
            _, (record, steps) = await self._client.transaction(
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
        with self._unavailable_on_etcd_errors():
            result = await self._client.get_prefix(self._prefix.encode())
        return [Stored(codec.decode(kv.value), kv.mod_revision) for kv in result]

    async def swap(
        self, session: Session, revision: int, step: StepEvent | None = None
    ) -> int | None:
        key = self._key(session.id)
        tx = self._client.transactions
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
        with self._unavailable_on_etcd_errors():
            succeeded, responses = await self._client.transaction(
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
        tx = self._client.transactions
        with self._unavailable_on_etcd_errors():
            log = self._log(session_id)
            succeeded, _ = await self._client.transaction(
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
            client = self._client
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
                watch = await client.watch(self._key(session_id), start_revision=last + 1)
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
                # etcd restarting or out of reach: watch again from the last change seen.
                log.warning("watch of session %s interrupted: %s; retrying", session_id, exc)
                if isinstance(exc, _MEMBER_GONE):
                    await self._fail_over(client)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)

    async def close(self) -> None:
        await self._client.close()


# Fail-overs started from a failing call (kept referenced until done).
_fail_overs: set[asyncio.Task[None]] = set()


async def _connect_from(endpoints: Sequence[str], first: int) -> tuple[aetcd.Client, int]:
    """A client of the first member that answers, from `endpoints[first]` on
    (wrapping around), and that member's index."""
    errors = []
    for step in range(len(endpoints)):
        index = (first + step) % len(endpoints)
        try:
            return await connect_first([endpoints[index]]), index
        except Unavailable as exc:
            errors.append(exc.message)
    raise Unavailable("; ".join(errors or ["cannot reach etcd: no endpoints"]))
