"""gRPC adapters for the worker ports: DisplayService and AutomationService."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc

from baton.automation.v1 import automation_pb2, automation_pb2_grpc
from baton.display.v1 import display_pb2, display_pb2_grpc
from services.runtime.errors import Unavailable, error_from_rpc
from services.runtime.grpc_client import open_channel
from services.runtime.grpc_tls import PLAINTEXT, GrpcTls
from services.runtime.internal_auth import InternalToken
from services.session.workers import WorkerHost

# Deadlines for unary calls, in seconds. Allocation may cold-start a display.
# Unary calls wait for the channel to be ready within their deadline, so a call
# made while a restarted worker service is being reconnected to waits for it
# instead of failing at once; a task stream waits at most _CONNECT_TIMEOUT.
_ALLOCATE_TIMEOUT = 30.0
_CALL_TIMEOUT = 15.0
_CONNECT_TIMEOUT = 10.0

T = TypeVar("T")
Reply = TypeVar("Reply")


# A whole recording read (an hour at 5 fps is tens of MiB) fits in this.
_RECORDING_TIMEOUT = 600.0


async def _unary(call: Awaitable[T]) -> T:
    """Await a unary call, turning its gRPC status into a BatonError."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc) from None


class GrpcDisplay:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = display_pb2_grpc.DisplayServiceStub(channel)

    async def allocate_slot(
        self, session_id: str, viewport: display_pb2.Viewport, record: bool = False
    ) -> display_pb2.Slot:
        response = await _unary(
            self._stub.AllocateSlot(
                display_pb2.AllocateSlotRequest(
                    session_id=session_id, viewport=viewport, record=record
                ),
                timeout=_ALLOCATE_TIMEOUT,
                wait_for_ready=True,
            )
        )
        return response.slot

    async def release_slot(self, slot_id: str) -> None:
        await _unary(
            self._stub.ReleaseSlot(
                display_pb2.ReleaseSlotRequest(slot_id=slot_id),
                timeout=_CALL_TIMEOUT,
                wait_for_ready=True,
            )
        )

    async def pause_recording(self, slot_id: str, paused: bool) -> None:
        await _unary(
            self._stub.PauseRecording(
                display_pb2.PauseRecordingRequest(slot_id=slot_id, paused=paused),
                timeout=_CALL_TIMEOUT,
            )
        )

    async def list_slots(self) -> list[display_pb2.Slot]:
        response = await _unary(
            self._stub.ListSlots(
                display_pb2.ListSlotsRequest(), timeout=_CALL_TIMEOUT, wait_for_ready=True
            )
        )
        return list(response.slots)

    async def watch_slots(self) -> AsyncIterator[display_pb2.WatchSlotsResponse]:
        try:
            async for event in self._stub.WatchSlots(display_pb2.WatchSlotsRequest()):
                yield event
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None

    async def read_recording(
        self, session_id: str, offset: int, length: int
    ) -> AsyncIterator[display_pb2.ReadRecordingResponse]:
        request = display_pb2.ReadRecordingRequest(
            session_id=session_id, offset=offset, length=length
        )
        try:
            async for chunk in self._stub.ReadRecording(request, timeout=_RECORDING_TIMEOUT):
                yield chunk
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None


async def _events_of(
    replies: AsyncIterable[automation_pb2.AttachTaskResponse],
) -> AsyncIterator[automation_pb2.StartTaskResponse]:
    async for reply in replies:
        yield reply.event


class GrpcAutomation:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._stub = automation_pb2_grpc.AutomationServiceStub(channel)

    def start_task(
        self, request: automation_pb2.StartTaskRequest
    ) -> AsyncIterator[automation_pb2.StartTaskResponse]:
        return self._stream(lambda: self._stub.StartTask(request))

    def attach_task(
        self, session_id: str, after_seq: int
    ) -> AsyncIterator[automation_pb2.StartTaskResponse]:
        request = automation_pb2.AttachTaskRequest(session_id=session_id, after_seq=after_seq)
        return self._stream(lambda: _events_of(self._stub.AttachTask(request)))

    async def _stream(self, call: Callable[[], AsyncIterable[Reply]]) -> AsyncIterator[Reply]:
        try:
            await asyncio.wait_for(self._channel.channel_ready(), _CONNECT_TIMEOUT)
        except TimeoutError:
            raise Unavailable(
                f"the automation service did not answer within {_CONNECT_TIMEOUT:g} s"
            ) from None
        try:
            async for event in call():
                yield event
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None

    async def cdp(
        self, session_id: str, reject: bool, commands: AsyncIterator[str]
    ) -> AsyncIterator[automation_pb2.CdpResponse]:
        async def requests() -> AsyncIterator[automation_pb2.CdpRequest]:
            opening = automation_pb2.CdpOpen(session_id=session_id, reject_on_user_control=reject)
            yield automation_pb2.CdpRequest(open=opening)
            async for command in commands:
                yield automation_pb2.CdpRequest(message=command)

        async for response in self._stream(lambda: self._stub.Cdp(requests())):
            yield response

    async def pause_task(self, session_id: str) -> None:
        await _unary(
            self._stub.PauseTask(
                automation_pb2.PauseTaskRequest(session_id=session_id),
                timeout=_CALL_TIMEOUT,
                wait_for_ready=True,
            )
        )

    async def probe_page(self, session_id: str, selector: str) -> tuple[str, bool]:
        answer = await _unary(
            self._stub.ProbePage(
                automation_pb2.ProbePageRequest(session_id=session_id, selector=selector),
                timeout=_CALL_TIMEOUT,
            )
        )
        return answer.url, answer.selector_found

    async def take_handback(self, session_id: str) -> automation_pb2.Handback:
        answer = await _unary(
            self._stub.TakeHandback(
                automation_pb2.TakeHandbackRequest(session_id=session_id),
                timeout=_CALL_TIMEOUT,
                wait_for_ready=True,
            )
        )
        return answer.handback

    async def resume_task(self, session_id: str) -> None:
        await _unary(
            self._stub.ResumeTask(
                automation_pb2.ResumeTaskRequest(session_id=session_id),
                timeout=_CALL_TIMEOUT,
                wait_for_ready=True,
            )
        )

    async def cancel_task(self, session_id: str) -> None:
        await _unary(
            self._stub.CancelTask(
                automation_pb2.CancelTaskRequest(session_id=session_id),
                timeout=_CALL_TIMEOUT,
                wait_for_ready=True,
            )
        )

    async def close_browser(self, session_id: str) -> None:
        await _unary(
            self._stub.CloseBrowser(
                automation_pb2.CloseBrowserRequest(session_id=session_id),
                timeout=_CALL_TIMEOUT,
                wait_for_ready=True,
            )
        )

    async def list_browsers(self) -> set[str]:
        reply = await _unary(
            self._stub.ListBrowsers(
                automation_pb2.ListBrowsersRequest(), timeout=_CALL_TIMEOUT, wait_for_ready=True
            )
        )
        return set(reply.session_ids)


def grpc_worker_host(
    host_id: str,
    display_address: str,
    automation_address: str,
    token: InternalToken,
    tls: GrpcTls = PLAINTEXT,
) -> tuple[WorkerHost, list[grpc.aio.Channel]]:
    """A worker host reached over gRPC, and the channels to close at shutdown."""
    display_channel = open_channel(display_address, token, tls)
    automation_channel = open_channel(automation_address, token, tls)
    host = WorkerHost(
        host_id=host_id,
        display_address=display_address,
        automation_address=automation_address,
        display=GrpcDisplay(display_channel),
        automation=GrpcAutomation(automation_channel),
    )
    return host, [display_channel, automation_channel]
