"""Figure 3 of the second round: the controller's latency while other agents work.

A probe session under the bench user's control is measured as in figure 1
(key to pixel through the edge), first with nothing else on the host, then with
10 and 20 other sessions whose agents scroll a long page and type into it
without pause (a step list as long as the API allows; a session whose task ends is
replaced by a new one).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from bench.key_page import KeyPage
from bench.latency import controlled_session, presses
from bench.stack import BenchStack
from bench.stats import ratio, summary_ms
from bench.viewer import open_viewer
from services.runtime.limits import MAX_STEPS

# One round of a busy agent: scroll down and up, type a word; no waits.
ROUND: list[dict[str, Any]] = [
    {"action": "scroll", "dy": 600},
    {"action": "type", "text": "busy agent "},
    {"action": "scroll", "dy": -600},
]


def busy_steps() -> list[dict[str, Any]]:
    """As many rounds as fit in one task, after focusing the text box."""
    # The bench asks for one step more than it gives (BenchStack.create).
    rounds = (MAX_STEPS - 2) // len(ROUND)
    return [{"action": "click", "selector": "#t"}, *ROUND * rounds]


class BusyAgents:
    """Sessions whose agents never stop: one whose task has ended is replaced."""

    def __init__(self, stack: BenchStack, url: str) -> None:
        self._stack = stack
        self._url = url
        self._keepers: list[asyncio.Task[None]] = []
        self._sessions: set[str] = set()

    async def grow_to(self, count: int) -> None:
        while len(self._keepers) < count:
            session_id = await self._start()
            self._keepers.append(asyncio.create_task(self._keep_busy(session_id)))

    async def _start(self) -> str:
        session_id = await self._stack.create(self._url, steps=busy_steps())
        self._sessions.add(session_id)
        return session_id

    async def steps_done(self) -> int:
        """Steps the current sessions' agents have completed: proof they work."""
        total = 0
        for session_id in list(self._sessions):
            session = await self._stack.client.get_session(session_id)
            total += session["task"].get("stepsCompleted", 0)
        return total

    async def _keep_busy(self, session_id: str) -> None:
        while True:
            await asyncio.sleep(1.0)
            session = await self._stack.client.get_session(session_id)
            if session["task"].get("status") in ("COMPLETED", "FAILED", "CANCELLED"):
                await self._stack.end(session_id)
                self._sessions.discard(session_id)
                session_id = await self._start()

    async def stop(self) -> None:
        for keeper in self._keepers:
            keeper.cancel()
        await asyncio.gather(*self._keepers, return_exceptions=True)
        for session_id in self._sessions:
            with contextlib.suppress(Exception):
                await self._stack.end(session_id)


@contextlib.asynccontextmanager
async def busy_agents(stack: BenchStack, url: str) -> AsyncIterator[BusyAgents]:
    agents = BusyAgents(stack, url)
    try:
        yield agents
    finally:
        await agents.stop()


async def latency_under_load(
    stack: BenchStack, page: KeyPage, loads: tuple[int, ...], samples: int
) -> dict[str, Any]:
    """Key to pixel p50/p99 of the probe at each count of busy sessions."""
    probe = await controlled_session(stack, page)
    result: dict[str, Any] = {}
    async with busy_agents(stack, page.url + "busy") as agents:
        for load in loads:
            await agents.grow_to(load)
            # Let the new agents get going before the probe is measured.
            await asyncio.sleep(3.0 if load else 0.0)
            steps_before, began = await agents.steps_done(), time.monotonic()
            async with open_viewer(await stack.stream_url(probe)) as viewer:
                await viewer.next_update()
                result[str(load)] = summary_ms(await presses(viewer, samples))
            steps = await agents.steps_done() - steps_before
            result[str(load)]["agent_steps_per_s"] = round(steps / (time.monotonic() - began), 1)
    await stack.end(probe)
    idle = result[str(loads[0])].get("p50")
    result["ratio_p50"] = ratio(result[str(loads[-1])].get("p50"), idle)
    return result
