"""The control fence's keys in etcd (etcd_fence.py): their layout, and what a
listing of one session's keys says. Pure: no I/O.

Per session and edge, under `<prefix><session_id>/<edge_id>/`:

- `viewers`: how many viewers the edge holds (a decimal count), under a lease
  of the viewer lease's length, written again at every report of the edge;
- `access`: present for about ACCESS_GRACE_S after a GetStreamAccess of the
  edge (its viewer's gate may open before the viewer is reported);
- `ack`: the newest session version the edge acknowledged (AcknowledgeControl).

An edge holds a gate (the fence waits for it) while its `viewers` key counts
one or more viewers or its `access` key exists, as in control_fence.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PREFIX = "/baton/fence/"
VIEWERS = "viewers"
ACCESS = "access"
ACK = "ack"
KINDS = (VIEWERS, ACCESS, ACK)


def session_prefix(prefix: str, session_id: str) -> str:
    return f"{prefix}{session_id}/"


def edge_key(session_keys: str, edge_id: str, kind: str) -> bytes:
    """The key of `kind` for `edge_id` under a session's prefix."""
    return f"{session_keys}{edge_id}/{kind}".encode()


def key(prefix: str, session_id: str, edge_id: str, kind: str) -> bytes:
    return edge_key(session_prefix(prefix, session_id), edge_id, kind)


def parse(session_keys: str, raw_key: bytes) -> tuple[str, str] | None:
    """(edge id, kind) of a key under `session_keys`; None for anything else."""
    text = raw_key.decode(errors="replace")
    if not text.startswith(session_keys):
        return None
    edge_id, sep, kind = text[len(session_keys) :].rpartition("/")
    if not sep or not edge_id or kind not in KINDS:
        return None
    return edge_id, kind


def number(raw: bytes | None, default: int) -> int:
    """A decimal value; `default` when absent or unreadable."""
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


def viewers_after(raw: bytes | None, delta: int) -> bytes:
    """A viewer joined (+1), left (-1) or is still there (0)."""
    viewers = number(raw, 0)
    return str(max(0, viewers + delta) if delta else max(1, viewers)).encode()


def acknowledged_after(raw: bytes | None, version: int) -> bytes | None:
    """The acknowledged version after acknowledging `version`; None: unchanged."""
    return None if number(raw, -1) >= version else str(version).encode()


@dataclass
class EdgeEntry:
    viewers: int = 0
    # mod_revision of the `viewers` and `access` keys (0: absent), so that an
    # edge forgotten after a wait is not forgotten over a report made meanwhile.
    viewers_revision: int = 0
    access_revision: int = 0
    acknowledged: int = -1

    @property
    def holds_gate(self) -> bool:
        return self.viewers > 0 or self.access_revision > 0


def read_entries(
    session_keys: str, kvs: Iterable[tuple[bytes, bytes, int]]
) -> dict[str, EdgeEntry]:
    """The edges of one session from its keys as (key, value, mod_revision)."""
    entries: dict[str, EdgeEntry] = {}
    for raw_key, value, revision in kvs:
        parsed = parse(session_keys, raw_key)
        if parsed is None:
            continue
        edge_id, kind = parsed
        entry = entries.setdefault(edge_id, EdgeEntry())
        if kind == VIEWERS:
            entry.viewers, entry.viewers_revision = number(value, 0), revision
        elif kind == ACCESS:
            entry.access_revision = revision
        else:
            entry.acknowledged = number(value, -1)
    return entries


def waiting_on(entries: dict[str, EdgeEntry], version: int) -> set[str]:
    """The edges holding a gate that have not acknowledged `version`."""
    return {e for e, entry in entries.items() if entry.holds_gate and entry.acknowledged < version}
