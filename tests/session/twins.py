"""In-memory twins of the worker ports, for the orchestrator's unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from baton.automation.v1 import automation_pb2
from baton.display.v1 import display_pb2
from services.runtime.errors import ResourceExhausted
from services.session.workers import WorkerHost


class DisplayTwin:
    def __init__(self, capacity: int = 100) -> None:
        self.capacity = capacity
        self.slots: dict[str, display_pb2.Slot] = {}
        self.released: list[str] = []
        self.events: asyncio.Queue[display_pb2.WatchSlotsResponse] = asyncio.Queue()
        self._next = 0

    async def allocate_slot(
        self, session_id: str, viewport: display_pb2.Viewport
    ) -> display_pb2.Slot:
        if len(self.slots) >= self.capacity:
            raise ResourceExhausted(f"all {self.capacity} slots are in use")
        self._next += 1
        slot = display_pb2.Slot(
            id=f"slot-{self._next}",
            host_id="twin",
            state=display_pb2.SLOT_STATE_READY,
            display=f":{100 + self._next}",
            viewport=viewport,
            websocket_url=f"ws://127.0.0.1:{6000 + self._next}/",
            session_id=session_id,
        )
        self.slots[slot.id] = slot
        return slot

    async def release_slot(self, slot_id: str) -> None:
        self.slots.pop(slot_id, None)
        self.released.append(slot_id)

    async def list_slots(self) -> list[display_pb2.Slot]:
        return list(self.slots.values())

    async def watch_slots(self) -> AsyncIterator[display_pb2.WatchSlotsResponse]:
        while True:
            yield await self.events.get()

    def fail(self, slot_id: str, reason: str) -> None:
        slot = self.slots[slot_id]
        self.events.put_nowait(
            display_pb2.WatchSlotsResponse(failed=display_pb2.SlotFailed(slot=slot, reason=reason))
        )


class AutomationTwin:
    """Records calls; the test feeds each session's task events through a queue."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.started: dict[str, automation_pb2.StartTaskRequest] = {}
        self.feeds: dict[str, asyncio.Queue[automation_pb2.StartTaskResponse | None]] = {}
        self.closed: set[str] = set()

    def feed(self, session_id: str) -> asyncio.Queue[automation_pb2.StartTaskResponse | None]:
        return self.feeds.setdefault(session_id, asyncio.Queue())

    async def start_task(
        self, request: automation_pb2.StartTaskRequest
    ) -> AsyncIterator[automation_pb2.StartTaskResponse]:
        self.started[request.session_id] = request
        self.calls.append(("start", request.session_id))
        feed = self.feed(request.session_id)
        while (event := await feed.get()) is not None:
            yield event

    async def pause_task(self, session_id: str) -> None:
        self.calls.append(("pause", session_id))

    async def resume_task(self, session_id: str) -> None:
        self.calls.append(("resume", session_id))

    async def cancel_task(self, session_id: str) -> None:
        self.calls.append(("cancel", session_id))

    async def close_browser(self, session_id: str) -> None:
        self.calls.append(("close", session_id))
        self.closed.add(session_id)

    async def list_browsers(self) -> set[str]:
        return set(self.started) - self.closed


def twin_worker() -> tuple[WorkerHost, DisplayTwin, AutomationTwin]:
    display, automation = DisplayTwin(), AutomationTwin()
    host = WorkerHost(
        host_id="twin",
        display_address="twin-display",
        automation_address="twin-automation",
        display=display,
        automation=automation,
    )
    return host, display, automation
