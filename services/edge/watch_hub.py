"""One WatchSession stream per session, shared by every listener in this edge.

Socket.IO rooms, stream connections (which need the current controller) and
metrics all listen to the same feed. A feed starts with its first listener and
stops with its last, or when the session ends. Because the feed comes from the
session service, any edge instance can serve any session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from baton.session.v1 import session_pb2
from services.runtime.errors import BatonError, NotFound

log = logging.getLogger(__name__)

Event = session_pb2.WatchSessionResponse
# A listener gets each event and whether it is the snapshot a stream starts
# with (rather than a change that just happened).
Listener = Callable[[Event, bool], Awaitable[None]]
WatchSource = Callable[[str], AsyncIterator[Event]]


def event_kind(event: Event) -> str:
    """ "created", "step", "control_changed", "task_changed", "error" or "ended"."""
    return event.WhichOneof("event") or ""


def session_of(event: Event) -> session_pb2.Session:
    kind = event_kind(event)
    if not kind:
        return session_pb2.Session()
    payload = getattr(event, kind)
    session: session_pb2.Session = payload.session
    return session


def summary_of(session: session_pb2.Session) -> session_pb2.Session:
    """The session without its steps (a watch's first event is a full view):
    what the hub keeps of every session it follows stays small."""
    if not session.steps and not session.task.steps:
        return session
    summary = session_pb2.Session()
    summary.CopyFrom(session)
    del summary.steps[:]
    del summary.task.steps[:]
    return summary


@dataclass
class _Feed:
    listeners: dict[int, Listener] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None


class SessionWatchHub:
    def __init__(self, source: WatchSource, retry_delay: float = 1.0) -> None:
        self._source = source
        self._retry_delay = retry_delay
        self._feeds: dict[str, _Feed] = {}
        # The newest session each running feed has delivered (for /metrics).
        self._latest: dict[str, session_pb2.Session] = {}
        self._next_id = 0

    def subscribe(self, session_id: str, listener: Listener) -> Callable[[], None]:
        """Start delivering `session_id`'s events to `listener`; return the unsubscribe."""
        feed = self._feeds.setdefault(session_id, _Feed())
        self._next_id += 1
        key = self._next_id
        feed.listeners[key] = listener
        if feed.task is None or feed.task.done():
            feed.task = asyncio.create_task(
                self._run(session_id, feed), name=f"watch-session-{session_id}"
            )

        def unsubscribe() -> None:
            feed.listeners.pop(key, None)
            if not feed.listeners:
                if feed.task is not None:
                    feed.task.cancel()
                if self._feeds.get(session_id) is feed:
                    del self._feeds[session_id]
                    self._latest.pop(session_id, None)

        return unsubscribe

    def watched(self) -> list[str]:
        return sorted(self._feeds)

    def latest_sessions(self) -> list[session_pb2.Session]:
        """The current state of every session this hub follows (ended ones leave)."""
        return list(self._latest.values())

    def feed_task(self, session_id: str) -> asyncio.Task[None] | None:
        """The task relaying `session_id`'s events, while there is one."""
        feed = self._feeds.get(session_id)
        return feed.task if feed is not None else None

    async def close(self) -> None:
        tasks = [feed.task for feed in self._feeds.values() if feed.task is not None]
        self._feeds.clear()
        self._latest.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, session_id: str, feed: _Feed) -> None:
        try:
            while feed.listeners:
                try:
                    if await self._relay(session_id, feed):
                        return
                except NotFound:
                    log.info("session %s is gone; its watchers stop", session_id)
                    return
                except BatonError as exc:
                    log.warning("watching session %s failed (%s); retrying", session_id, exc)
                await asyncio.sleep(self._retry_delay)
        finally:
            if self._feeds.get(session_id) is feed and feed.task is asyncio.current_task():
                del self._feeds[session_id]
            if session_id not in self._feeds:
                self._latest.pop(session_id, None)

    async def _relay(self, session_id: str, feed: _Feed) -> bool:
        """Deliver one stream's events; True once the session has ended."""
        initial = True
        async for event in self._source(session_id):
            if event_kind(event) == "ended":
                self._latest.pop(session_id, None)
            else:
                latest = self._latest.get(session_id)
                session = session_of(event)
                if latest is None or session.version >= latest.version:
                    self._latest[session_id] = summary_of(session)
            for listener in list(feed.listeners.values()):
                try:
                    await listener(event, initial)
                except Exception:
                    log.exception("a listener of session %s failed", session_id)
            initial = False
            if event_kind(event) == "ended":
                return True
        # The service closes the stream when the session is over.
        return True
