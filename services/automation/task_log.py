"""TaskLog: one task's events, numbered, for whoever follows the task.

A task outlives the stream that follows it (services/automation/README.md,
"Following a task"): when the session service replica following it goes away,
another one attaches (AttachTask) and reads on after the last event it applied.
Events are numbered from 1 without gaps; the log keeps every event of the task
(a few per step, bounded by the task's max steps) for as long as the task's
session is here. When nobody has followed an unfinished task for the grace
window, `abandoned` is called: nobody would see what the agent does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable

from services.automation.steps import StatusChanged, TaskEvent
from services.runtime.errors import FailedPrecondition


def ends_task(event: TaskEvent) -> bool:
    return isinstance(event, StatusChanged) and event.status.finished


class TaskLog:
    def __init__(self, grace_s: float, abandoned: Callable[[], Awaitable[object]]) -> None:
        self._grace_s = grace_s
        self._abandoned = abandoned
        self._events: list[TaskEvent] = []
        self._appended = asyncio.Event()
        self._followers = 0
        self._grace: asyncio.Task[None] | None = None

    @property
    def finished(self) -> bool:
        return bool(self._events) and ends_task(self._events[-1])

    @property
    def followers(self) -> int:
        return self._followers

    def append(self, event: TaskEvent) -> int:
        """Add the task's next event; its seq. Nothing comes after the end event."""
        if self.finished:
            return len(self._events)
        self._events.append(event)
        appended, self._appended = self._appended, asyncio.Event()
        appended.set()
        return len(self._events)

    async def follow(self, after_seq: int = 0) -> AsyncGenerator[tuple[int, TaskEvent], None]:
        """(seq, event) from `after_seq + 1` on, live, until the task's end event."""
        if not 0 <= after_seq <= len(self._events):
            raise FailedPrecondition(
                f"the task has {len(self._events)} events; cannot follow after {after_seq}"
            )
        self._followers += 1
        self._cancel_grace()
        seq = after_seq
        try:
            while True:
                while seq < len(self._events):
                    event = self._events[seq]
                    seq += 1
                    yield seq, event
                    if ends_task(event):
                        return
                await self._appended.wait()
        finally:
            self._followers -= 1
            if self._followers == 0 and not self.finished:
                await self._left_alone()

    async def _left_alone(self) -> None:
        if self._grace_s <= 0:
            await self._abandoned()
            return
        self._grace = asyncio.create_task(self._wait_grace(), name="task-grace")

    async def _wait_grace(self) -> None:
        await asyncio.sleep(self._grace_s)
        self._grace = None
        if self._followers == 0 and not self.finished:
            await self._abandoned()

    def _cancel_grace(self) -> None:
        grace, self._grace = self._grace, None
        if grace is not None:
            grace.cancel()

    async def close(self) -> None:
        """Stop the grace timer (the task's session is going)."""
        grace, self._grace = self._grace, None
        if grace is not None and grace is not asyncio.current_task():
            grace.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await grace
