"""Fan-out of slot events to every WatchSlots caller."""

from __future__ import annotations

import asyncio

from services.display.slot import SlotEvent


class Subscription:
    """Events published after it was made, until closed. Registered at once."""

    def __init__(self, hub: SlotEventHub) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[SlotEvent | None] = asyncio.Queue()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> SlotEvent:
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    def put(self, event: SlotEvent | None) -> None:
        self._queue.put_nowait(event)

    def close(self) -> None:
        self._hub.unsubscribe(self)


class SlotEventHub:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    def publish(self, event: SlotEvent) -> None:
        for subscription in self._subscribers:
            subscription.put(event)

    def subscribe(self) -> Subscription:
        subscription = Subscription(self)
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def close(self) -> None:
        """End every subscription."""
        for subscription in list(self._subscribers):
            subscription.put(None)
        self._subscribers.clear()
