"""The worker registry's record: what a worker host says about itself in etcd.

A worker host's display service writes one record under
`/baton/workers/<host_id>` with its own lease (TTL `BATON_WORKER_LEASE_TTL_S`),
and session services watch the prefix to know which hosts exist (README.md,
"Cluster"). One definition for the writer and the readers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from services.runtime.errors import InvalidArgument

PREFIX = "/baton/workers/"
# BATON_WORKER_LEASE_TTL_S's default: how long a dead host's record outlives it.
DEFAULT_LEASE_TTL_S = 10


def key_for(host_id: str) -> str:
    return f"{PREFIX}{host_id}"


@dataclass(frozen=True)
class WorkerRecord:
    host_id: str
    # New at every start of the host's display service (uuid4 hex): a restarted
    # host is a new epoch, and anything addressed to the old one is refused.
    epoch: str
    # host:port of the host's gRPC services, as session services dial them.
    display_address: str
    automation_address: str
    # host:port of the host's websockify, as edges reach it.
    stream_address: str
    max_slots: int
    held: int
    warm_ready: int
    draining: bool
    # Unix time the epoch began.
    started_at: float

    @property
    def free_slots(self) -> int:
        return max(0, self.max_slots - self.held)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> WorkerRecord:
        try:
            data: dict[str, Any] = json.loads(raw)
            return cls(
                host_id=str(data["host_id"]),
                epoch=str(data["epoch"]),
                display_address=str(data["display_address"]),
                automation_address=str(data["automation_address"]),
                stream_address=str(data["stream_address"]),
                max_slots=int(data["max_slots"]),
                held=int(data["held"]),
                warm_ready=int(data["warm_ready"]),
                draining=bool(data["draining"]),
                started_at=float(data["started_at"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidArgument(f"malformed worker record: {exc}") from None
