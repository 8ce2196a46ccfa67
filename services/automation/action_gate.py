"""ActionGate: the one door every browser action goes through.

It is what makes pause real: `pause()` closes the door so no new action
starts, lets the action in flight finish within the grace period, aborts it
after that (cancelling the awaiting task aborts the Playwright call in the
driver too), and returns only when nothing is in flight. Actions are
serialized, so the task runner and Act never drive the page at once.

After a pause, the first action waits for `settle` (the input drain,
input_drain.py): input a person sent while the gate was closed reaches the
page before the agent's. A pause during the settling cancels it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class GateClosed(Exception):
    """The gate is paused: the action did not start."""


class ActionAborted(Exception):
    """The action was in flight when a pause outlived the grace period."""


@dataclass(frozen=True)
class PauseOutcome:
    # True when an in-flight action outlived the grace period and was aborted.
    aborted_action: bool


Settle = Callable[[], Awaitable[None]]


class ActionGate:
    def __init__(self, grace_s: float, settle: Settle | None = None) -> None:
        self._grace_s = grace_s
        self._settle = settle
        # A pause was lifted and nothing has settled since.
        self._settle_due = False
        self._settling: asyncio.Task[None] | None = None
        self._open = asyncio.Event()
        self._open.set()
        self._lock = asyncio.Lock()
        self._in_flight: asyncio.Task[object] | None = None
        self._aborted: set[asyncio.Task[object]] = set()

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    @property
    def busy(self) -> bool:
        return self._in_flight is not None

    async def wait_open(self) -> None:
        await self._open.wait()

    async def run(self, action: Callable[[], Awaitable[T]]) -> T:
        """Run `action` unless paused (GateClosed); ActionAborted if a pause aborts it."""
        async with self._lock:
            # No await between this check and registering the task: a pause
            # either sees the action in flight or the action sees the pause.
            if self.paused:
                raise GateClosed
            if self._settle_due and self._settle is not None:
                await self._run_settle(self._settle)
                if self.paused:
                    raise GateClosed
            task: asyncio.Task[T] = asyncio.ensure_future(action())
            self._in_flight = task
            try:
                await asyncio.wait({task})
            finally:
                self._in_flight = None
                if not task.done():
                    # Our caller was cancelled: the action must not outlive it.
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            if task in self._aborted:
                self._aborted.discard(task)
                raise ActionAborted
            return task.result()

    async def _run_settle(self, settle: Settle) -> None:
        task = asyncio.ensure_future(settle())
        self._settling = task
        try:
            await asyncio.wait({task})
        finally:
            self._settling = None
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if task.cancelled():
            return  # by a pause: due again on the next resume
        if task.exception() is not None:
            # Settling is best effort: the action goes on, the bug is logged.
            log.error("settling before an action failed", exc_info=task.exception())
        self._settle_due = False

    async def pause(self) -> PauseOutcome:
        """Close the gate; return when no action is in flight."""
        self._open.clear()
        settling = self._settling
        if settling is not None:
            # Nothing to finish: the drain only waits, and runs again on resume.
            settling.cancel()
            await asyncio.wait({settling})
        task = self._in_flight
        if task is None:
            return PauseOutcome(aborted_action=False)
        done, _ = await asyncio.wait({task}, timeout=self._grace_s)
        aborted = False
        if not done:
            aborted = True
            self._aborted.add(task)
            task.cancel()
            await asyncio.wait({task})
        return PauseOutcome(aborted_action=aborted)

    async def abort(self) -> None:
        """Abort the in-flight action now (cancel, shutdown) without closing the gate."""
        task = self._in_flight
        if task is not None and not task.done():
            self._aborted.add(task)
            task.cancel()
            await asyncio.wait({task})

    def resume(self) -> None:
        if self.paused:
            self._settle_due = True
        self._open.set()
