"""Presence: who is looking at a session, and when it was last used.

Edges report viewers joining, still present and leaving, and user input
(RecordActivity); API calls count as activity too. Viewer counts lapse when no
edge refreshes them within the viewer lease, so a dead edge does not keep a
session alive. The edges holding viewers are also told to the control fence
(control_fence.py), which the handoff waits on.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import datetime, timedelta

from services.runtime.errors import Conflict, NotFound
from services.session.control_fence import ControlFence
from services.session.input_buckets import add_input
from services.session.model import Session
from services.session.records import SessionRecords, bookkeeping
from services.session.settings import SessionSettings

# API activity is written at most this often per session.
ACTIVITY_RESOLUTION = timedelta(seconds=5)


class Presence:
    def __init__(
        self, records: SessionRecords, fence: ControlFence, settings: SessionSettings
    ) -> None:
        self._records = records
        self._fence = fence
        self._lease = timedelta(seconds=settings.viewer_lease_s)
        # Refresh presence well within the lease, but not on every report.
        self._resolution = min(ACTIVITY_RESOLUTION, self._lease / 3)

    async def touch(self, session: Session) -> None:
        """Count an API call as activity, writing at most once per resolution."""
        now = self._records.clock()
        if session.state.terminal or now - session.last_activity_at < ACTIVITY_RESOLUTION:
            return
        with contextlib.suppress(NotFound, Conflict):
            await self._records.update(
                session.id,
                lambda s: bookkeeping(replace(s, last_activity_at=max(now, s.last_activity_at))),
            )

    async def access_granted(self, session_id: str, edge_id: str) -> None:
        """`edge_id` may open an input gate on the session's stream from now on."""
        await self._fence.access_granted(session_id, edge_id)

    async def record_activity(
        self,
        session_id: str,
        viewers_delta: int,
        input_seen: bool,
        viewer_seen: bool = False,
        edge_id: str = "",
        keys: int = 0,
        pointer: int = 0,
    ) -> None:
        """Count viewers joining (+1) and leaving (-1), user input (with its
        `keys` and `pointer` events, kept per second: input_buckets.py), and
        viewers still present (`viewer_seen`, refreshed at most once per
        resolution); `edge_id` is the edge that holds them."""
        if edge_id and (viewers_delta or viewer_seen):
            await self._fence.viewers_changed(session_id, edge_id, viewers_delta)
        now = self._records.clock()

        def change(s: Session) -> Session:
            if s.state.terminal:
                return s
            if (
                not viewers_delta
                and not input_seen
                and s.viewers_seen_at is not None
                and now - s.viewers_seen_at < self._resolution
            ):
                return s
            return bookkeeping(
                replace(
                    s,
                    viewer_count=max(0, s.viewer_count + viewers_delta),
                    viewers_seen_at=now if viewer_seen or viewers_delta > 0 else s.viewers_seen_at,
                    last_activity_at=now if input_seen or viewers_delta else s.last_activity_at,
                    last_input_at=now if input_seen else s.last_input_at,
                    inputs=add_input(s.inputs, now, keys, pointer) if input_seen else s.inputs,
                )
            )

        await self._records.update(session_id, change)

    def watched(self, session: Session, now: datetime) -> bool:
        """Viewers count while a gateway keeps reporting them."""
        seen = session.viewers_seen_at
        return session.viewer_count > 0 and seen is not None and now - seen < self._lease

    def last_used(self, session: Session) -> datetime:
        """When the session was last used: activity, or a viewer last seen."""
        return max(session.last_activity_at, session.viewers_seen_at or session.last_activity_at)
