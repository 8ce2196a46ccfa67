"""Figure 3: handoff latency while the agent runs a task of short steps.

take_control: from sending PUT .../control {take_control} to the page receiving
the user's first key (the bench types `u` through the edge stream as soon as
the PUT answers; the page reports each `u` back by fetch, timed on arrival).
return_control: from sending the PUT to the session's next "step started" event
(WatchSession over gRPC).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from baton.automation.v1 import automation_pb2
from baton.session.v1 import session_pb2
from bench.key_page import KeyPage
from bench.latency import focus_page, wait_for_page
from bench.stack import OPERATOR, BenchStack
from bench.stats import summary_ms
from bench.viewer import Viewer, open_viewer

KEY_U = ord("u")
# The agent's task: key presses with short waits, up to the 1000-step limit.
AGENT_STEPS: list[dict[str, Any]] = [
    {"action": "press", "key": "a"},
    {"action": "wait", "ms": 15},
] * 495
STEP_TIMEOUT_S = 10.0


class StepClock:
    """Arrival times of the session's "step started" events."""

    def __init__(self) -> None:
        self.started: list[float] = []
        self._changed = asyncio.Condition()

    async def follow(self, stack: BenchStack, session_id: str) -> None:
        request = session_pb2.WatchSessionRequest(session_id=session_id, actor=OPERATOR)
        async for event in stack.sessions.WatchSession(request):
            if (
                event.HasField("step")
                and event.step.step.status == automation_pb2.STEP_STATUS_STARTED
            ):
                arrived = time.perf_counter()
                async with self._changed:
                    self.started.append(arrived)
                    self._changed.notify_all()

    async def next_after(self, moment: float) -> float:
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self.started) and self.started[-1] > moment)
        return next(t for t in self.started if t > moment)


@contextlib.asynccontextmanager
async def agent_session(stack: BenchStack, page: KeyPage) -> AsyncIterator[tuple[str, StepClock]]:
    session_id = await stack.create(page.url, AGENT_STEPS)
    clock = StepClock()
    follower = asyncio.create_task(clock.follow(stack, session_id))
    try:
        yield session_id, clock
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await stack.end(session_id)


async def handoffs_on(
    stack: BenchStack, page: KeyPage, session_id: str, clock: StepClock, viewer: Viewer, want: int
) -> tuple[list[float], list[float], list[float]]:
    take: list[float] = []
    put_take: list[float] = []
    back: list[float] = []
    await asyncio.wait_for(clock.next_after(0.0), STEP_TIMEOUT_S)
    focused = False
    while len(take) < want:
        # Land at a random moment of the agent's step cycle.
        await asyncio.sleep(random.uniform(0.0, 0.04))
        keys_before = len(page.user_keys)
        began = time.perf_counter()
        await stack.control(session_id, "take_control")
        answered = time.perf_counter()
        if not focused:
            # A user clicks into the page once; the click is not part of the timing.
            await focus_page(viewer)
            focused = True
            await stack.control(session_id, "return_control")
            await asyncio.wait_for(clock.next_after(time.perf_counter()), STEP_TIMEOUT_S)
            continue
        await viewer.client.press_key(KEY_U)
        arrived = await asyncio.wait_for(page.next_user_key(keys_before), STEP_TIMEOUT_S)
        take.append(arrived - began)
        put_take.append(answered - began)
        began = time.perf_counter()
        await stack.control(session_id, "return_control")
        try:
            step = await asyncio.wait_for(clock.next_after(began), STEP_TIMEOUT_S)
        except TimeoutError:
            break  # the task ran out of steps
        back.append(step - began)
    return take, put_take, back


async def handoffs(stack: BenchStack, page: KeyPage, count: int) -> dict[str, Any]:
    take: list[float] = []
    put_take: list[float] = []
    back: list[float] = []
    while len(take) < count:
        async with (
            agent_session(stack, page) as (session_id, clock),
            open_viewer(await stack.stream_url(session_id)) as viewer,
        ):
            await wait_for_page(viewer)
            more = await handoffs_on(stack, page, session_id, clock, viewer, count - len(take))
        take += more[0]
        put_take += more[1]
        back += more[2]
    return {
        "take_control_to_first_key": summary_ms(take),
        "take_control_put": summary_ms(put_take),
        "return_control_to_next_step": summary_ms(back),
    }
