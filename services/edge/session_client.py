"""The edge's only backend: the session service, over gRPC.

Every call takes the authenticated principal and passes it as the Actor; gRPC
failures come back as the shared BatonError hierarchy so the HTTP and
Socket.IO layers map them the same way.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import grpc

from baton.automation.v1 import automation_pb2
from baton.session.v1 import session_pb2, session_pb2_grpc
from services.edge.auth import Principal
from services.edge.metrics import WebhookCounts
from services.runtime.errors import BatonError, NotFound, error_from_rpc, error_from_status
from services.runtime.grpc_client import is_serving, open_channel
from services.runtime.grpc_tls import PLAINTEXT, GrpcTls
from services.runtime.internal_auth import InternalToken
from services.runtime.slot_demand import FleetCapacity
from services.runtime.user_ids import OPERATOR_USER_ID

log = logging.getLogger(__name__)

SERVICE_NAME = session_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name
_T = TypeVar("_T")

# The edge's own identity when it watches a session for its listeners; each
# listener was authorized with the caller's own actor first.
EDGE_ACTOR = session_pb2.Actor(user_id=OPERATOR_USER_ID, operator=True)


def actor_of(principal: Principal) -> session_pb2.Actor:
    share_id = principal.share.share_id if principal.share else ""
    return session_pb2.Actor(
        user_id=principal.user_id,
        operator=principal.operator,
        share_id=share_id,
        source_address=principal.source_address,
    )


class SessionClient:
    def __init__(
        self,
        address: str,
        token: InternalToken,
        tls: GrpcTls = PLAINTEXT,
        timeout: float = 90.0,
    ) -> None:
        self._channel = open_channel(address, token, tls)
        # Names this edge process to the session service's handoff fence.
        self.edge_id = uuid.uuid4().hex
        self._stub = session_pb2_grpc.SessionServiceStub(self._channel)
        # CreateSession waits for a slot and the browser: allow for it.
        self._timeout = timeout

    async def close(self) -> None:
        await self._channel.close(None)

    async def healthy(self, deadline_s: float = 5.0) -> bool:
        """Whether the session service and its workers are ready.

        The session server's overall health (service "") is SERVING only while
        its worker host's display and automation services are.
        """
        return await is_serving(self._channel, deadline_s=deadline_s)

    async def create(
        self, principal: Principal, request: session_pb2.CreateSessionRequest
    ) -> session_pb2.Session:
        request.actor.CopyFrom(actor_of(principal))
        answer = await _call(self._stub.CreateSession(request, timeout=self._timeout))
        return answer.session

    async def get(self, principal: Principal, session_id: str) -> session_pb2.Session:
        request = session_pb2.GetSessionRequest(session_id=session_id, actor=actor_of(principal))
        answer = await _call(self._stub.GetSession(request, timeout=self._timeout))
        return answer.session

    async def list_page(
        self, principal: Principal, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[session_pb2.Session], str]:
        """One page of sessions and the next page's token ("" on the last page)."""
        request = session_pb2.ListSessionsRequest(
            actor=actor_of(principal), page_size=page_size, page_token=page_token
        )
        answer = await _call(self._stub.ListSessions(request, timeout=self._timeout))
        return list(answer.sessions), answer.next_page_token

    async def list(self, principal: Principal) -> list[session_pb2.Session]:
        """Every session the principal may see, page by page."""
        sessions, token = await self.list_page(principal)
        while token:
            page, token = await self.list_page(principal, page_token=token)
            sessions += page
        return sessions

    async def change_control(
        self,
        principal: Principal,
        session_id: str,
        action: session_pb2.ControlAction.ValueType,
        expected_version: int | None = None,
        to_user_id: str = "",
        auto_return: automation_pb2.AutoReturn | None = None,
    ) -> session_pb2.Session:
        request = session_pb2.ChangeControlRequest(
            session_id=session_id,
            actor=actor_of(principal),
            action=action,
            to_user_id=to_user_id,
            auto_return=auto_return,
        )
        if expected_version is not None:
            request.expected_version = expected_version
        answer = await _call(self._stub.ChangeControl(request, timeout=self._timeout))
        return answer.session

    async def request_control(self, principal: Principal, session_id: str) -> session_pb2.Session:
        request = session_pb2.RequestControlRequest(
            session_id=session_id, actor=actor_of(principal)
        )
        answer = await _call(self._stub.RequestControl(request, timeout=self._timeout))
        return answer.session

    async def end(self, principal: Principal, session_id: str, reason: str) -> session_pb2.Session:
        request = session_pb2.EndSessionRequest(
            session_id=session_id, actor=actor_of(principal), reason=reason
        )
        answer = await _call(self._stub.EndSession(request, timeout=self._timeout))
        return answer.session

    async def recording_size(self, principal: Principal, session_id: str) -> int:
        """The size of the session's recording now; NotFound as for GetSession,
        and when the session was not recorded or its recording expired."""
        call = self._read_recording(principal, session_id, 0, 1)
        try:
            async for message in call:
                return message.size
        except grpc.aio.AioRpcError as exc:
            raise public_error(exc) from None
        finally:
            call.cancel()
        raise NotFound(f"session {session_id} has no recording")

    async def read_recording(
        self, principal: Principal, session_id: str, offset: int, length: int
    ) -> AsyncIterator[bytes]:
        """The recording's bytes from `offset`, `length` of them."""
        call = self._read_recording(principal, session_id, offset, length)
        try:
            async for message in call:
                if message.data:
                    yield message.data
        except grpc.aio.AioRpcError as exc:
            raise public_error(exc) from None
        finally:
            call.cancel()

    def _read_recording(
        self, principal: Principal, session_id: str, offset: int, length: int
    ) -> grpc.aio.UnaryStreamCall[Any, session_pb2.ReadRecordingResponse]:
        request = session_pb2.ReadRecordingRequest(
            session_id=session_id, actor=actor_of(principal), offset=offset, length=length
        )
        # No overall deadline: a long video to a slow client takes its time.
        return self._stub.ReadRecording(request)

    async def stream_access(
        self, principal: Principal, session_id: str, holds_gate: bool = False
    ) -> session_pb2.GetStreamAccessResponse:
        """Where the stream is; `holds_gate` when this edge will gate the viewer's input
        (the session service then waits for its acknowledgements: the handoff fence)."""
        request = session_pb2.GetStreamAccessRequest(
            session_id=session_id,
            actor=actor_of(principal),
            edge_id=self.edge_id if holds_gate else "",
        )
        return await _call(self._stub.GetStreamAccess(request, timeout=self._timeout))

    async def record_activity(
        self,
        session_id: str,
        kind: session_pb2.ActivityKind.ValueType,
        keys: int = 0,
        pointer: int = 0,
    ) -> None:
        """Report viewer activity; with user input, its key presses and pointer
        events since the last report (counts only)."""
        request = session_pb2.RecordActivityRequest(
            session_id=session_id, kind=kind, edge_id=self.edge_id, keys=keys, pointer=pointer
        )
        await _call(self._stub.RecordActivity(request, timeout=self._timeout))

    async def record_audit(
        self, principal: Principal, session_id: str, kind: str, detail: Mapping[str, int | str]
    ) -> None:
        """Report a connection this edge served to the audit trail (RecordAudit)."""
        event = session_pb2.AuditEvent(
            session_id=session_id,
            kind=kind,
            user_id=principal.user_id,
            source_address=principal.source_address,
            detail_json=json.dumps(detail, separators=(",", ":")),
        )
        request = session_pb2.RecordAuditRequest(event=event)
        await _call(self._stub.RecordAudit(request, timeout=self._timeout))

    async def list_audit(
        self, principal: Principal, since: datetime, session_id: str, limit: int
    ) -> Sequence[session_pb2.AuditEvent]:
        request = session_pb2.ListAuditRequest(
            actor=actor_of(principal), session_id=session_id, limit=limit
        )
        request.since.FromDatetime(since)
        answer = await _call(self._stub.ListAudit(request, timeout=self._timeout))
        return answer.events

    async def acknowledge_control(self, session_id: str, version: int) -> None:
        """Tell the session service this edge's input gates are at `version`."""
        request = session_pb2.AcknowledgeControlRequest(
            session_id=session_id, edge_id=self.edge_id, version=version
        )
        await _call(self._stub.AcknowledgeControl(request, timeout=self._timeout))

    async def capacity(self, deadline_s: float = 5.0) -> FleetCapacity:
        """The worker hosts' slots, as the session service's registry shows them."""
        answer = await _call(
            self._stub.GetCapacity(session_pb2.GetCapacityRequest(), timeout=deadline_s)
        )
        return FleetCapacity(
            worker_hosts=answer.worker_hosts,
            draining_hosts=answer.draining_hosts,
            slots_total=answer.slots_total,
            slots_held=answer.slots_held,
            slots_warm=answer.slots_warm,
            capacity_known=answer.capacity_known,
        )

    async def webhook_stats(self, deadline_s: float = 5.0) -> WebhookCounts | None:
        """The webhook deliveries of the session replica answering; None when off."""
        answer = await _call(
            self._stub.GetWebhookStats(session_pb2.GetWebhookStatsRequest(), timeout=deadline_s)
        )
        if not answer.enabled:
            return None
        return WebhookCounts(
            attempts=answer.attempts,
            failed_attempts=answer.failed_attempts,
            delivered=answer.delivered,
            dropped=answer.dropped,
        )

    async def create_share(
        self,
        principal: Principal,
        session_id: str,
        role: session_pb2.ShareRole.ValueType,
        ttl_s: float,
        label: str,
    ) -> session_pb2.Share:
        request = session_pb2.CreateShareRequest(
            session_id=session_id,
            actor=actor_of(principal),
            role=role,
            ttl_seconds=ttl_s,
            label=label,
        )
        answer = await _call(self._stub.CreateShare(request, timeout=self._timeout))
        return answer.share

    async def list_shares(
        self, principal: Principal, session_id: str
    ) -> tuple[session_pb2.Share, ...]:
        request = session_pb2.ListSharesRequest(session_id=session_id, actor=actor_of(principal))
        answer = await _call(self._stub.ListShares(request, timeout=self._timeout))
        return tuple(answer.shares)

    async def revoke_share(self, principal: Principal, session_id: str, share_id: str) -> None:
        request = session_pb2.RevokeShareRequest(
            session_id=session_id, actor=actor_of(principal), share_id=share_id
        )
        await _call(self._stub.RevokeShare(request, timeout=self._timeout))

    async def cdp(
        self, principal: Principal, session_id: str, reject: bool, commands: AsyncIterator[str]
    ) -> AsyncIterator[automation_pb2.CdpResponse]:
        """An external CDP client on the session's browser (SessionService.Cdp)."""

        async def requests() -> AsyncIterator[session_pb2.CdpRequest]:
            opening = session_pb2.CdpOpen(
                session_id=session_id, actor=actor_of(principal), reject_on_user_control=reject
            )
            yield session_pb2.CdpRequest(open=opening)
            async for command in commands:
                yield session_pb2.CdpRequest(message=command)

        call = self._stub.Cdp(requests())
        try:
            async for reply in call:
                yield reply.response
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            call.cancel()

    async def watch(self, session_id: str) -> AsyncIterator[session_pb2.WatchSessionResponse]:
        """The session's events, first its current state, until it ends."""
        request = session_pb2.WatchSessionRequest(session_id=session_id, actor=EDGE_ACTOR)
        call = self._stub.WatchSession(request)
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            call.cancel()


# Codes the session service answers with on purpose; their details are
# written for the caller.
_DELIBERATE_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
    }
)
_PLAIN_MESSAGES = {
    grpc.StatusCode.UNAVAILABLE: "the session service is unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the session service did not answer in time",
}


def public_error(exc: grpc.aio.AioRpcError) -> BatonError:
    """The error a browser may see for a failed call.

    The other statuses mostly come from gRPC itself (no connection, deadline,
    cancelled) with core text such as internal addresses: those details go
    to the log, the caller gets a plain message.
    """
    code = exc.code()
    if code in _DELIBERATE_CODES:
        return error_from_rpc(exc)
    log.warning("session service call failed: %s: %s", code.name, exc.details())
    return error_from_status(code, _PLAIN_MESSAGES.get(code, "internal error"))


async def _call(awaitable: grpc.aio.UnaryUnaryCall[Any, _T]) -> _T:
    try:
        return await awaitable
    except grpc.aio.AioRpcError as exc:
        raise public_error(exc) from None
