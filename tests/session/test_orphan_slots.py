"""Orphaned slots are given back on a real display service (Xvnc), over gRPC."""

from __future__ import annotations

from pathlib import Path

from baton.display.v1 import display_pb2, display_pb2_grpc
from services.display.server import start_display_server
from services.display.settings import Backend, DisplaySettings, NumberRange
from services.runtime.grpc_client import open_channel
from services.session.grpc_workers import GrpcDisplay
from services.session.model import Actor
from services.session.orchestrator import SessionOrchestrator, SessionSpec
from services.session.settings import SessionSettings
from services.session.store import MemoryStore
from services.session.workers import StaticWorkerDirectory, WorkerHost
from tests.conftest import INTERNAL_TOKEN, require_binary
from tests.session.twins import AutomationTwin

SPEC = SessionSpec(task="t", url="http://127.0.0.1:9/", max_steps=5, steps=(), viewport=None)


async def test_a_slot_held_for_an_unknown_session_is_released(tmp_path: Path) -> None:
    require_binary("Xvnc", "tigervnc-standalone-server")
    display = await start_display_server(
        DisplaySettings(
            internal_token=INTERNAL_TOKEN,
            host_id="orphans",
            backend=Backend.XVNC,
            max_slots=3,
            warm_slots=1,
            displays=NumberRange(400, 409),
            vnc_ports=NumberRange(17400, 17409),
            state_dir=tmp_path / "display",
            stop_grace=1.0,
        )
    )
    channel = open_channel(f"127.0.0.1:{display.port}", INTERNAL_TOKEN)
    automation = AutomationTwin()
    worker = WorkerHost("orphans", "display", "automation", GrpcDisplay(channel), automation)
    sessions = SessionOrchestrator(
        MemoryStore(), StaticWorkerDirectory(worker), SessionSettings(internal_token=INTERNAL_TOKEN)
    )
    try:
        session = await sessions.create(Actor("alice"), SPEC)
        assert session.placement is not None
        # A slot held for a session this (restarted, in-memory) store never knew.
        stub = display_pb2_grpc.DisplayServiceStub(channel)
        lost = await stub.AllocateSlot(display_pb2.AllocateSlotRequest(session_id="lost"))
        assert await sessions.release_orphans() == [lost.slot.id]
        slots = (await stub.ListSlots(display_pb2.ListSlotsRequest())).slots
        held = {s.id for s in slots if not s.warm}
        assert held == {session.placement.slot_id}
        assert ("close", "lost") in automation.calls
    finally:
        await sessions.close()
        await channel.close(None)
        await display.stop(1.0)
