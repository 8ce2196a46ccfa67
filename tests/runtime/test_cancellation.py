"""A retry loop whose awaited call turns its cancellation into an error of its own
(as a cancelled grpc or aetcd call may) still stops when cancelled."""

from __future__ import annotations

import asyncio

from services.runtime.cancellation import unless_cancelled


class CallFailed(Exception):
    pass


async def call_that_hides_its_cancellation() -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        raise CallFailed("cancelled") from None


async def retry_loop(rounds: list[int], guarded: bool, stop: asyncio.Event) -> None:
    while not stop.is_set():
        rounds.append(1)
        try:
            await call_that_hides_its_cancellation()
        except Exception as exc:
            if guarded:
                unless_cancelled(exc)


async def test_a_guarded_retry_loop_stops_when_cancelled() -> None:
    rounds: list[int] = []
    loop = asyncio.create_task(retry_loop(rounds, guarded=True, stop=asyncio.Event()))
    await asyncio.sleep(0.01)
    loop.cancel()
    await asyncio.wait([loop], timeout=1)
    assert loop.cancelled()
    assert len(rounds) == 1


async def test_an_unguarded_one_swallows_its_cancellation() -> None:
    """The positive control: without the guard the loop goes on."""
    rounds: list[int] = []
    stop = asyncio.Event()
    loop = asyncio.create_task(retry_loop(rounds, guarded=False, stop=stop))
    await asyncio.sleep(0.01)
    loop.cancel()
    await asyncio.wait([loop], timeout=0.2)
    assert not loop.done()
    assert len(rounds) == 2
    stop.set()  # end it the only way it still listens to
    loop.cancel()
    await asyncio.wait([loop], timeout=1)
    assert loop.done()
