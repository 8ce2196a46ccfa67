"""Session store in etcd (through aetcd), for several session services.

One key per session under a prefix; the key's mod_revision is the store
revision, and every write is an etcd transaction comparing it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import aetcd
import aetcd.exceptions

from services.runtime.errors import Conflict, InvalidArgument, Unavailable
from services.session import codec
from services.session.model import Session
from services.session.store import Stored


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """ "http://127.0.0.1:2379" or "127.0.0.1:2379" → ("127.0.0.1", 2379)."""
    address = endpoint.split("://", 1)[-1].rstrip("/")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidArgument(f"etcd endpoint {endpoint!r} is not host:port")
    return host, int(port)


class EtcdStore:
    def __init__(self, client: aetcd.Client, prefix: str = "/baton/sessions/") -> None:
        self._client = client
        self._prefix = prefix

    @classmethod
    async def connect(cls, endpoints: Sequence[str], prefix: str = "/baton/sessions/") -> EtcdStore:
        # aetcd talks to one endpoint; the first reachable one is used.
        errors = []
        for endpoint in endpoints:
            host, port = parse_endpoint(endpoint)
            client = aetcd.Client(host=host, port=port, timeout=5)
            try:
                await client.connect()
                await client.status()
            except aetcd.exceptions.ClientError as exc:
                errors.append(f"{endpoint}: {exc}")
                await client.close()
                continue
            return cls(client, prefix)
        raise Unavailable("cannot reach etcd at " + "; ".join(errors or ["no endpoints"]))

    def _key(self, session_id: str) -> bytes:
        return (self._prefix + session_id).encode()

    async def create(self, session: Session) -> int:
        key = self._key(session.id)
        tx = self._client.transactions
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
        result = await self._client.get(self._key(session_id))
        if result is None:
            return None
        return Stored(codec.decode(result.value), result.mod_revision)

    async def list_all(self) -> list[Stored]:
        result = await self._client.get_prefix(self._prefix.encode())
        return [Stored(codec.decode(kv.value), kv.mod_revision) for kv in result]

    async def swap(self, session: Session, revision: int) -> int | None:
        key = self._key(session.id)
        tx = self._client.transactions
        succeeded, responses = await self._client.transaction(
            compare=[tx.mod(key) == revision],
            success=[tx.put(key, codec.encode(session))],
            failure=[],
        )
        if not succeeded:
            return None
        new_revision: int = responses[0].response_put.header.revision
        return new_revision

    async def watch(self, session_id: str, after_revision: int) -> AsyncIterator[Stored]:
        watch = await self._client.watch(self._key(session_id), start_revision=after_revision + 1)
        try:
            async for event in watch:
                if event.kind == "PUT":
                    yield Stored(codec.decode(event.kv.value), event.kv.mod_revision)
        finally:
            await watch.cancel()

    async def close(self) -> None:
        await self._client.close()
