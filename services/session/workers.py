"""Ports towards the worker hosts' display and automation services.

The orchestrator talks to these protocols; `grpc_workers` implements them over
gRPC, and unit tests use in-memory twins. A `WorkerDirectory` says which hosts
exist: one fixed host without etcd (`make run`), the hosts registered in etcd in a
cluster (services/runtime/worker_registry.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from baton.automation.v1 import automation_pb2
from baton.display.v1 import display_pb2
from services.runtime.worker_registry import WorkerRecord


class DisplayPort(Protocol):
    async def allocate_slot(
        self, session_id: str, viewport: display_pb2.Viewport
    ) -> display_pb2.Slot: ...

    async def release_slot(self, slot_id: str) -> None: ...

    async def list_slots(self) -> list[display_pb2.Slot]: ...

    def watch_slots(self) -> AsyncIterator[display_pb2.WatchSlotsResponse]: ...


class AutomationPort(Protocol):
    def start_task(
        self, request: automation_pb2.StartTaskRequest
    ) -> AsyncIterator[automation_pb2.StartTaskResponse]: ...

    async def pause_task(self, session_id: str) -> None: ...

    async def resume_task(self, session_id: str) -> None: ...

    async def cancel_task(self, session_id: str) -> None: ...

    async def close_browser(self, session_id: str) -> None: ...

    async def list_browsers(self) -> set[str]:
        """Sessions whose browser runs (or is starting) on the host."""
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
