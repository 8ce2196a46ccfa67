"""In-memory twins of the worker ports, for the orchestrator's unit tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from baton.automation.v1 import automation_pb2
from baton.display.v1 import display_pb2
from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from services.runtime.worker_registry import WorkerRecord
from services.session.workers import HostView, LostHost, WorkerHost


class DisplayTwin:
    def __init__(self, capacity: int = 100, host_id: str = "twin") -> None:
        self.capacity = capacity
        self.host_id = host_id
        # Refuses allocations as a display does after SIGTERM (cluster contract).
        self.draining = False
        self.slots: dict[str, display_pb2.Slot] = {}
        self.released: list[str] = []
        self.events: asyncio.Queue[display_pb2.WatchSlotsResponse] = asyncio.Queue()
        self._next = 0
        self.allocations = 0
        # The recorded sessions' videos (a test may set their bytes).
        self.recordings: dict[str, bytes] = {}
        # Per slot: whether its recording was last paused (True) or resumed.
        self.recording_paused: dict[str, bool] = {}

    async def allocate_slot(
        self, session_id: str, viewport: display_pb2.Viewport, record: bool = False
    ) -> display_pb2.Slot:
        self.allocations += 1
        if self.draining:
            raise FailedPrecondition("host is draining")
        if len(self.slots) >= self.capacity:
            raise ResourceExhausted(f"all {self.capacity} slots are in use")
        self._next += 1
        slot = display_pb2.Slot(
            id=f"slot-{self._next}",
            host_id=self.host_id,
            state=display_pb2.SLOT_STATE_READY,
            display=f":{100 + self._next}",
            viewport=viewport,
            websocket_url=f"ws://127.0.0.1:{6000 + self._next}/",
            session_id=session_id,
        )
        if record:
            slot.recording_start_time.GetCurrentTime()
            self.recordings[session_id] = b""
        self.slots[slot.id] = slot
        return slot

    async def read_recording(
        self, session_id: str, offset: int, length: int
    ) -> AsyncIterator[display_pb2.ReadRecordingResponse]:
        if session_id not in self.recordings:
            raise NotFound(f"host {self.host_id} holds no recording of session {session_id}")
        data = self.recordings[session_id]
        end = len(data) if length == 0 else offset + length
        yield display_pb2.ReadRecordingResponse(size=len(data))
        yield display_pb2.ReadRecordingResponse(data=data[offset:end])

    async def release_slot(self, slot_id: str) -> None:
        self.slots.pop(slot_id, None)
        self.released.append(slot_id)

    async def pause_recording(self, slot_id: str, paused: bool) -> None:
        self.recording_paused[slot_id] = paused

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
        # Each session's numbered task events so far (what AttachTask replays).
        self.logs: dict[str, list[automation_pb2.StartTaskResponse]] = {}
        # What ProbePage answers: the page's URL and the selectors that match.
        self.page_url = "about:blank"
        self.selectors_present: set[str] = set()

    def feed(self, session_id: str) -> asyncio.Queue[automation_pb2.StartTaskResponse | None]:
        return self.feeds.setdefault(session_id, asyncio.Queue())

    async def start_task(
        self, request: automation_pb2.StartTaskRequest
    ) -> AsyncIterator[automation_pb2.StartTaskResponse]:
        self.started[request.session_id] = request
        self.calls.append(("start", request.session_id))
        async for event in self._follow(request.session_id, 0):
            yield event

    async def attach_task(
        self, session_id: str, after_seq: int
    ) -> AsyncIterator[automation_pb2.StartTaskResponse]:
        self.calls.append(("attach", session_id))
        if session_id not in self.started:
            raise NotFound(f"no task of session {session_id!r} here")
        async for event in self._follow(session_id, after_seq):
            yield event

    async def _follow(
        self, session_id: str, after_seq: int
    ) -> AsyncIterator[automation_pb2.StartTaskResponse]:
        """Events fed by the test, numbered as automation numbers them (from 1);
        every follower reads the same log. None in the feed ends this stream."""
        log = self.logs.setdefault(session_id, [])
        feed = self.feed(session_id)
        seq = after_seq
        while True:
            while seq < len(log):
                seq += 1
                yield log[seq - 1]
            event = await feed.get()
            if event is None:
                return
            numbered = automation_pb2.StartTaskResponse()
            numbered.CopyFrom(event)
            numbered.seq = len(log) + 1
            log.append(numbered)

    async def cdp(
        self, session_id: str, reject: bool, commands: AsyncIterator[str]
    ) -> AsyncIterator[automation_pb2.CdpResponse]:
        """Echoes each command back as its answer."""
        self.calls.append(("cdp", session_id))
        async for command in commands:
            yield automation_pb2.CdpResponse(message=command)

    async def pause_task(self, session_id: str) -> None:
        self.calls.append(("pause", session_id))

    async def probe_page(self, session_id: str, selector: str) -> tuple[str, bool]:
        if selector.startswith("!"):
            raise InvalidArgument(f"{selector!r} is not a selector")
        return self.page_url, selector in self.selectors_present

    async def take_handback(self, session_id: str) -> automation_pb2.Handback:
        self.calls.append(("handback", session_id))
        return automation_pb2.Handback(url_before="about:blank", url_after="about:blank")

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


@dataclass
class HostTwin:
    """One worker host of the DirectoryTwin, and what its registry record says."""

    host: WorkerHost
    display: DisplayTwin
    automation: AutomationTwin
    max_slots: int
    epoch: str = field(default_factory=lambda: uuid.uuid4().hex)
    warm_ready: int = 0
    draining: bool = False

    def record(self) -> WorkerRecord:
        return WorkerRecord(
            host_id=self.host.host_id,
            epoch=self.epoch,
            display_address=self.host.display_address,
            automation_address=self.host.automation_address,
            stream_address=f"{self.host.host_id}:6080",
            max_slots=self.max_slots,
            held=len(self.display.slots),
            warm_ready=self.warm_ready,
            draining=self.draining,
            started_at=0.0,
        )


class DirectoryTwin:
    """A WorkerDirectory of in-memory hosts: the registry as etcd would show it,
    capacity following each host's slots at once."""

    def __init__(self) -> None:
        self.hosts: dict[str, HostTwin] = {}
        self._lost: asyncio.Queue[LostHost] = asyncio.Queue()

    def add(self, host_id: str, slots: int = 3, warm_ready: int = 0) -> HostTwin:
        display, automation = DisplayTwin(slots, host_id), AutomationTwin()
        host = WorkerHost(
            host_id, f"{host_id}-display", f"{host_id}-automation", display, automation
        )
        self.hosts[host_id] = HostTwin(host, display, automation, slots, warm_ready=warm_ready)
        return self.hosts[host_id]

    def lose(self, host_id: str) -> HostTwin:
        """The host's lease expired: gone, and said so on lost_hosts()."""
        gone = self.hosts.pop(host_id)
        self._lost.put_nowait(LostHost(host_id, gone.epoch))
        return gone

    def restart(self, host_id: str, announce: bool = False) -> HostTwin:
        """The host came back with a new epoch, its slots and browsers gone; with
        `announce`, the old epoch is reported lost as etcd's directory does."""
        old = self.hosts[host_id]
        fresh = self.add(host_id, old.max_slots)
        assert fresh.epoch != old.epoch
        if announce:
            self._lost.put_nowait(LostHost(host_id, old.epoch))
        return fresh

    def live_hosts(self) -> list[HostView]:
        return [HostView(h.host, h.record()) for h in self.hosts.values()]

    def host(self, host_id: str) -> WorkerHost | None:
        twin = self.hosts.get(host_id)
        return twin.host if twin else None

    async def lost_hosts(self) -> AsyncIterator[LostHost]:
        while True:
            yield await self._lost.get()
