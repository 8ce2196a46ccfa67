"""ControlFence: the agent resumes only after every edge has closed its input gates.

When control returns to the agent, the new state is committed first; then the
agent's resume waits here until every edge holding stream viewers of the session
has acknowledged (AcknowledgeControl) a session version at least as new as the
commit, i.e. has closed its viewers' input gates (services/session/README.md,
"The handoff fence"). An edge that does not acknowledge within the bounded wait is
treated as gone: its viewers no longer count until it reports them again.

Which edges hold viewers comes from what they tell us: GetStreamAccess (a gate may
open right after it), and the viewer reports of RecordActivity (joined, present,
left). Entries lapse with the viewer lease, as viewer counts do.

`ControlFence` is the port; `MemoryControlFence` keeps it in this process (one
session service), `EtcdControlFence` (etcd_fence.py) shares it between replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

# After GetStreamAccess, how long an edge counts as holding a gate before its
# viewer has reported joining (the edge connects upstream in between).
ACCESS_GRACE_S = 15.0


@dataclass
class _Edge:
    viewers: int = 0
    seen_at: float = 0.0
    accessed_at: float | None = None
    acknowledged: int = -1


class ControlFence(Protocol):
    async def access_granted(self, session_id: str, edge_id: str) -> None:
        """`edge_id` may open an input gate on the session's stream from now on."""

    async def viewers_changed(self, session_id: str, edge_id: str, delta: int) -> None:
        """A viewer joined (+1), left (-1) or is still there (0) on `edge_id`."""

    async def acknowledge(self, session_id: str, edge_id: str, version: int) -> None:
        """`edge_id` has applied `version` (or newer) to its input gates."""

    async def wait(self, session_id: str, version: int, timeout_s: float) -> list[str]:
        """Wait until every edge holding viewers acknowledged `version`, at most
        `timeout_s`; the ones that did not are forgotten (treated as gone) and
        returned."""

    def forget(self, session_id: str) -> None:
        """The session ended: what is kept about it may go."""


class MemoryControlFence:
    def __init__(self, lease_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._lease_s = lease_s
        self._clock = clock
        self._edges: dict[str, dict[str, _Edge]] = {}
        self._acknowledged = asyncio.Condition()

    def _edge(self, session_id: str, edge_id: str) -> _Edge:
        edge = self._edges.setdefault(session_id, {}).setdefault(edge_id, _Edge())
        edge.seen_at = self._clock()
        return edge

    async def access_granted(self, session_id: str, edge_id: str) -> None:
        self._edge(session_id, edge_id).accessed_at = self._clock()

    async def viewers_changed(self, session_id: str, edge_id: str, delta: int) -> None:
        edge = self._edge(session_id, edge_id)
        edge.viewers = max(0, edge.viewers + delta) if delta else max(1, edge.viewers)

    def holders(self, session_id: str) -> list[str]:
        """The edges that may have an open input gate on the session now."""
        now = self._clock()
        return sorted(
            edge_id
            for edge_id, edge in self._edges.get(session_id, {}).items()
            if now - edge.seen_at < self._lease_s
            and (
                edge.viewers > 0
                or (edge.accessed_at is not None and now - edge.accessed_at < ACCESS_GRACE_S)
            )
        )

    async def acknowledge(self, session_id: str, edge_id: str, version: int) -> None:
        edge = self._edges.get(session_id, {}).get(edge_id)
        if edge is None:
            return
        async with self._acknowledged:
            edge.acknowledged = max(edge.acknowledged, version)
            self._acknowledged.notify_all()

    def _waiting_on(self, session_id: str, version: int, edges: list[str]) -> list[str]:
        known = self._edges.get(session_id, {})
        return [e for e in edges if e in known and known[e].acknowledged < version]

    async def wait(self, session_id: str, version: int, timeout_s: float) -> list[str]:
        edges = self.holders(session_id)
        if not edges:
            return []
        async with self._acknowledged:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._acknowledged.wait_for(
                        lambda: not self._waiting_on(session_id, version, edges)
                    ),
                    timeout_s,
                )
        late = self._waiting_on(session_id, version, edges)
        for edge_id in late:
            self._edges.get(session_id, {}).pop(edge_id, None)
        return late

    def forget(self, session_id: str) -> None:
        self._edges.pop(session_id, None)
