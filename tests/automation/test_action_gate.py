"""ActionGate: pause waits for the action in flight, aborts it after the grace."""

from __future__ import annotations

import asyncio

import pytest

from services.automation.action_gate import ActionAborted, ActionGate, GateClosed


async def test_an_action_runs_when_open_and_is_refused_when_paused() -> None:
    gate = ActionGate(grace_s=1)

    async def answer() -> int:
        return 42

    assert await gate.run(answer) == 42
    outcome = await gate.pause()
    assert not outcome.aborted_action
    assert gate.paused
    with pytest.raises(GateClosed):
        await gate.run(answer)
    gate.resume()
    assert await gate.run(answer) == 42


async def test_pause_lets_a_short_action_finish() -> None:
    gate = ActionGate(grace_s=5)
    release = asyncio.Event()
    finished: list[str] = []

    async def action() -> None:
        await release.wait()
        finished.append("done")

    running = asyncio.ensure_future(gate.run(action))
    await asyncio.sleep(0)
    pausing = asyncio.ensure_future(gate.pause())
    await asyncio.sleep(0)
    assert not pausing.done()  # waits for the action in flight
    release.set()
    outcome = await pausing
    assert not outcome.aborted_action
    assert finished == ["done"]
    await running


async def test_pause_aborts_an_action_that_outlives_the_grace() -> None:
    gate = ActionGate(grace_s=0.05)
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    running = asyncio.ensure_future(gate.run(forever))
    await asyncio.sleep(0)
    outcome = await gate.pause()
    assert outcome.aborted_action
    assert cancelled.is_set()  # nothing is in flight once pause returns
    assert not gate.busy
    with pytest.raises(ActionAborted):
        await running


async def test_actions_are_serialized() -> None:
    gate = ActionGate(grace_s=1)
    order: list[str] = []

    async def action(name: str) -> None:
        order.append(f"{name} begins")
        await asyncio.sleep(0.01)
        order.append(f"{name} ends")

    await asyncio.gather(gate.run(lambda: action("a")), gate.run(lambda: action("b")))
    assert order == ["a begins", "a ends", "b begins", "b ends"]


async def test_a_queued_action_does_not_start_after_a_pause() -> None:
    gate = ActionGate(grace_s=1)
    started: list[str] = []

    async def action(name: str) -> None:
        started.append(name)
        await asyncio.sleep(0.01)

    first = asyncio.ensure_future(gate.run(lambda: action("first")))
    second = asyncio.ensure_future(gate.run(lambda: action("second")))
    await asyncio.sleep(0)
    await gate.pause()
    await first
    with pytest.raises(GateClosed):
        await second
    assert started == ["first"]


async def test_cancelling_the_caller_cancels_the_action() -> None:
    gate = ActionGate(grace_s=1)
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    running = asyncio.ensure_future(gate.run(forever))
    await asyncio.sleep(0)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert cancelled.is_set()
    assert not gate.busy


async def test_the_first_action_after_a_pause_waits_for_settling_once() -> None:
    settled: list[str] = []
    order: list[str] = []

    async def settle() -> None:
        await asyncio.sleep(0.02)
        settled.append("drained")
        order.append("settle")

    gate = ActionGate(grace_s=1, settle=settle)

    async def action() -> None:
        order.append("action")

    # No pause yet: nothing to settle.
    await gate.run(action)
    await gate.pause()
    gate.resume()
    await gate.run(action)
    await gate.run(action)
    assert order == ["action", "settle", "action", "action"]
    # A resume without a pause before it settles nothing.
    gate.resume()
    await gate.run(action)
    assert settled == ["drained"]


async def test_a_pause_during_settling_cancels_it_and_refuses_the_action() -> None:
    started = asyncio.Event()
    settles: list[str] = []

    async def settle() -> None:
        settles.append("start")
        started.set()
        await asyncio.sleep(10)

    gate = ActionGate(grace_s=5, settle=settle)
    await gate.pause()
    gate.resume()

    async def action() -> str:
        return "acted"

    running = asyncio.ensure_future(gate.run(action))
    await started.wait()
    # The pause does not wait for the grace: settling is only waiting.
    outcome = await asyncio.wait_for(gate.pause(), 0.5)
    assert not outcome.aborted_action
    with pytest.raises(GateClosed):
        await running
    # Due again after the next resume; this time it finishes.
    gate = ActionGate(grace_s=5, settle=_quick)
    await gate.pause()
    gate.resume()
    assert await gate.run(action) == "acted"


async def _quick() -> None:
    return None


async def test_a_failing_settle_does_not_stop_the_action() -> None:
    async def settle() -> None:
        raise RuntimeError("bug")

    gate = ActionGate(grace_s=1, settle=settle)
    await gate.pause()
    gate.resume()

    async def action() -> str:
        return "acted"

    assert await gate.run(action) == "acted"
