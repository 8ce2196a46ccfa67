"""Reaching etcd through aetcd: endpoint parsing and the first reachable member.

aetcd talks to one endpoint per client, so every user of etcd (the session store,
the worker registry and its readers) connects to the first member that answers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import aetcd
import aetcd.exceptions

from services.runtime.errors import InvalidArgument, Unavailable


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """ "http://127.0.0.1:2379" or "127.0.0.1:2379" → ("127.0.0.1", 2379)."""
    address = endpoint.split("://", 1)[-1].rstrip("/")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidArgument(f"etcd endpoint {endpoint!r} is not host:port")
    return host, int(port)


async def connect_first(endpoints: Sequence[str], timeout_s: float = 5.0) -> aetcd.Client:
    """A connected client of the first endpoint that answers a status call."""
    errors = []
    for endpoint in endpoints:
        host, port = parse_endpoint(endpoint)
        # aetcd passes the timeout to every gRPC call it makes.
        client = aetcd.Client(host=host, port=port, timeout=timeout_s)
        try:
            await client.connect()
            await client.status()
        except aetcd.exceptions.ClientError as exc:
            errors.append(f"{endpoint}: {exc}")
            await client.close()
            continue
        return client
    raise Unavailable("cannot reach etcd at " + "; ".join(errors or ["no endpoints"]))


@contextlib.contextmanager
def unavailable_on_etcd_errors() -> Iterator[None]:
    """etcd out of reach is Unavailable (503), not an internal error."""
    try:
        yield
    except aetcd.exceptions.ClientError as exc:
        raise Unavailable(f"etcd: {exc}") from exc
