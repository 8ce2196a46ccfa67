"""DisplayService over gRPC: proto <-> domain conversion only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from baton.display.v1 import display_pb2, display_pb2_grpc
from services.display.settings import Backend
from services.display.slot import Slot, SlotEvent, SlotEventKind, SlotState, checked_viewport
from services.display.slot_pool import SlotPool
from services.runtime.errors import FailedPrecondition

_Context = grpc.aio.ServicerContext[Any, Any]

_BACKENDS = {
    Backend.XVNC: display_pb2.DISPLAY_BACKEND_XVNC,
    Backend.XVFB_X11VNC: display_pb2.DISPLAY_BACKEND_XVFB_X11VNC,
}
_STATES = {
    SlotState.STARTING: display_pb2.SLOT_STATE_STARTING,
    SlotState.READY: display_pb2.SLOT_STATE_READY,
    SlotState.FAILED: display_pb2.SLOT_STATE_FAILED,
    SlotState.RELEASED: display_pb2.SLOT_STATE_RELEASED,
}


def slot_to_proto(slot: Slot) -> display_pb2.Slot:
    create_time = Timestamp()
    create_time.FromDatetime(slot.create_time)
    return display_pb2.Slot(
        id=slot.id,
        host_id=slot.host_id,
        state=_STATES[slot.state],
        backend=_BACKENDS[slot.backend],
        display=slot.display_name,
        viewport=display_pb2.Viewport(width=slot.viewport.width, height=slot.viewport.height),
        vnc_address=slot.vnc_address,
        websocket_url=slot.websocket_url,
        session_id=slot.session_id,
        create_time=create_time,
        failure_reason=slot.failure_reason,
        warm=slot.warm,
        vnc_password=slot.vnc_password,
        xauthority=slot.xauthority,
        recording_start_time=_timestamp(slot.recording_start_time)
        if slot.recording_start_time
        else None,
    )


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def event_to_proto(event: SlotEvent) -> display_pb2.WatchSlotsResponse:
    slot = slot_to_proto(event.slot)
    if event.kind is SlotEventKind.ALLOCATED:
        return display_pb2.WatchSlotsResponse(allocated=display_pb2.SlotAllocated(slot=slot))
    if event.kind is SlotEventKind.WARMED:
        return display_pb2.WatchSlotsResponse(warmed=display_pb2.SlotWarmed(slot=slot))
    if event.kind is SlotEventKind.FAILED:
        return display_pb2.WatchSlotsResponse(
            failed=display_pb2.SlotFailed(slot=slot, reason=event.reason)
        )
    return display_pb2.WatchSlotsResponse(released=display_pb2.SlotReleased(slot=slot))


class DisplayServicer(display_pb2_grpc.DisplayServiceServicer):
    def __init__(self, pool: SlotPool, backend: Backend, host_id: str) -> None:
        self._pool = pool
        self._backend = backend
        self._host_id = host_id

    async def AllocateSlot(
        self, request: display_pb2.AllocateSlotRequest, context: _Context
    ) -> display_pb2.AllocateSlotResponse:
        viewport = None
        if request.HasField("viewport"):
            viewport = checked_viewport(request.viewport.width, request.viewport.height)
        slot, from_warm_pool = await self._pool.allocate(
            viewport, request.session_id, record=request.record
        )
        return display_pb2.AllocateSlotResponse(
            slot=slot_to_proto(slot), from_warm_pool=from_warm_pool
        )

    async def ReleaseSlot(
        self, request: display_pb2.ReleaseSlotRequest, context: _Context
    ) -> display_pb2.ReleaseSlotResponse:
        await self._pool.release(request.slot_id)
        return display_pb2.ReleaseSlotResponse()

    async def GetSlot(
        self, request: display_pb2.GetSlotRequest, context: _Context
    ) -> display_pb2.GetSlotResponse:
        return display_pb2.GetSlotResponse(slot=slot_to_proto(self._pool.get(request.slot_id)))

    async def ListSlots(
        self, request: display_pb2.ListSlotsRequest, context: _Context
    ) -> display_pb2.ListSlotsResponse:
        return display_pb2.ListSlotsResponse(slots=[slot_to_proto(s) for s in self._pool.list()])

    async def WatchSlots(
        self, request: display_pb2.WatchSlotsRequest, context: _Context
    ) -> AsyncIterator[display_pb2.WatchSlotsResponse]:
        subscription = self._pool.events.subscribe()
        try:
            # Headers go out once subscribed: a caller that awaits them misses no event.
            await context.send_initial_metadata(())
            async for event in subscription:
                yield event_to_proto(event)
        finally:
            subscription.close()

    async def GetCapacity(
        self, request: display_pb2.GetCapacityRequest, context: _Context
    ) -> display_pb2.GetCapacityResponse:
        capacity = self._pool.capacity()
        return display_pb2.GetCapacityResponse(
            host_id=self._host_id,
            max_slots=capacity.max_slots,
            used_slots=capacity.held,
            warm_slots_ready=capacity.warm_ready,
            free_slots=capacity.free,
            backend=_BACKENDS[self._backend],
        )

    async def PauseRecording(
        self, request: display_pb2.PauseRecordingRequest, context: _Context
    ) -> display_pb2.PauseRecordingResponse:
        self._pool.pause_recording(request.slot_id, request.paused)
        return display_pb2.PauseRecordingResponse()

    async def ReadRecording(
        self, request: display_pb2.ReadRecordingRequest, context: _Context
    ) -> AsyncIterator[display_pb2.ReadRecordingResponse]:
        recordings = self._pool.recordings
        if recordings is None:
            raise FailedPrecondition(f"host {self._host_id} keeps no recordings")
        session_id = request.session_id
        yield display_pb2.ReadRecordingResponse(
            size=await recordings.size(session_id), recording=session_id in recordings.active
        )
        async for chunk in recordings.read(session_id, request.offset, request.length):
            yield display_pb2.ReadRecordingResponse(data=chunk)
