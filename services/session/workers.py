"""Ports towards a worker host's display and automation services.

The orchestrator talks to these protocols; `grpc_workers` implements them over
gRPC, and unit tests use in-memory twins.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from baton.automation.v1 import automation_pb2
from baton.display.v1 import display_pb2


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
