"""Ports towards the worker hosts' display and automation services.

The orchestrator talks to these protocols; `grpc_workers` implements them over
gRPC, and unit tests use in-memory twins. A `WorkerDirectory` says which hosts
exist: one fixed host without etcd (`make run`), the hosts registered in etcd in a
cluster (services/runtime/worker_registry.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from baton.automation.v1 import automation_pb2
from baton.display.v1 import display_pb2
from services.runtime.worker_registry import WorkerRecord


class DisplayPort(Protocol):
    async def allocate_slot(
        self, session_id: str, viewport: display_pb2.Viewport, record: bool = False
    ) -> display_pb2.Slot: ...

    def read_recording(
        self, session_id: str, offset: int, length: int
    ) -> AsyncIterator[display_pb2.ReadRecordingResponse]: ...

    async def release_slot(self, slot_id: str) -> None: ...

    async def pause_recording(self, slot_id: str, paused: bool) -> None: ...

    async def list_slots(self) -> list[display_pb2.Slot]: ...

    def watch_slots(self) -> AsyncIterator[display_pb2.WatchSlotsResponse]: ...


class AutomationPort(Protocol):
    def start_task(
        self, request: automation_pb2.StartTaskRequest
    ) -> AsyncIterator[automation_pb2.StartTaskResponse]: ...

    def attach_task(
        self, session_id: str, after_seq: int
    ) -> AsyncIterator[automation_pb2.StartTaskResponse]:
        """The session's task's events after `after_seq` (NotFound: no such task)."""
        ...

    async def pause_task(self, session_id: str) -> None: ...

    async def probe_page(self, session_id: str, selector: str) -> tuple[str, bool]:
        """The page's URL and whether `selector` matches (InvalidArgument: not one)."""
        ...

    async def take_handback(self, session_id: str) -> automation_pb2.Handback:
        """What the person did since the pause (NotFound: it was not watched)."""
        ...

    async def resume_task(self, session_id: str) -> None: ...

    async def cancel_task(self, session_id: str) -> None: ...

    async def close_browser(self, session_id: str) -> None: ...

    async def list_browsers(self) -> set[str]:
        """Sessions whose browser runs (or is starting) on the host."""
        ...

    def cdp(
        self, session_id: str, reject: bool, commands: AsyncIterator[str]
    ) -> AsyncIterator[automation_pb2.CdpResponse]:
        """An external CDP client on the session's browser: `commands` (JSON) in,
        answers, events and gate reports out (AutomationService.Cdp)."""
        ...


@dataclass(frozen=True)
class WorkerHost:
    """One worker host: its display and automation services, side by side."""

    host_id: str
    display_address: str
    automation_address: str
    display: DisplayPort
    automation: AutomationPort


@dataclass(frozen=True)
class HostView:
    """A live host: how to call it, and what it last said about itself."""

    host: WorkerHost
    record: WorkerRecord


@dataclass(frozen=True)
class LostHost:
    """A host whose registration ended: its lease expired, or a new epoch replaced it."""

    host_id: str
    epoch: str


class WorkerDirectory(Protocol):
    def live_hosts(self) -> list[HostView]:
        """Hosts that exist now (draining ones included: they still hold sessions)."""
        ...

    def host(self, host_id: str) -> WorkerHost | None:
        """The live host with that id, or None when it is gone."""
        ...

    def lost_hosts(self) -> AsyncIterator[LostHost]:
        """Every host whose registration ends from now on, as it ends."""
        ...


def placed_host(directory: WorkerDirectory, host_id: str, epoch: str) -> WorkerHost | None:
    """The host a session was placed on, or None when it is lost: gone from the
    directory, or registered again with another epoch (a restart: its slots and
    browsers are gone). An empty `epoch` (a record older than epochs) matches any."""
    host = directory.host(host_id)
    if host is None or not epoch:
        return host
    for view in directory.live_hosts():
        if view.record.host_id == host_id:
            return host if view.record.epoch == epoch else None
    return None


# The single host's epoch: the same at every start of the session service, so a
# session stored by the embedded store before a restart still finds its host.
STATIC_EPOCH = "static"
# The single host's capacity is not known to the session service; its display
# refuses an allocation when full (the reservation), so placement never skips it.
UNKNOWN_CAPACITY = 1 << 31


class StaticWorkerDirectory:
    """One fixed worker host (BATON_DISPLAY_ADDRESS / BATON_AUTOMATION_ADDRESS):
    the directory without etcd, as `make run` uses. The host is never lost."""

    def __init__(self, host: WorkerHost, started_at: float | None = None) -> None:
        self._host = host
        self._view = HostView(
            host,
            WorkerRecord(
                host_id=host.host_id,
                epoch=STATIC_EPOCH,
                display_address=host.display_address,
                automation_address=host.automation_address,
                stream_address="",
                max_slots=UNKNOWN_CAPACITY,
                held=0,
                warm_ready=0,
                draining=False,
                started_at=time.time() if started_at is None else started_at,
            ),
        )

    def live_hosts(self) -> list[HostView]:
        return [self._view]

    def host(self, host_id: str) -> WorkerHost | None:
        return self._host if host_id == self._host.host_id else None

    async def lost_hosts(self) -> AsyncIterator[LostHost]:
        # Never: wait until the consumer is cancelled.
        await asyncio.Event().wait()
        return
        yield  # an async generator that yields nothing
