"""baton.session.v1.SessionService: protobuf in, orchestrator call, protobuf out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

import grpc

from baton.session.v1 import session_pb2, session_pb2_grpc
from services.runtime.errors import InvalidArgument
from services.runtime.limits import (
    MAX_REASON_BYTES,
    MAX_SHARE_ID_BYTES,
    MAX_STEP_FIELD_BYTES,
    MAX_URL_BYTES,
    MAX_USER_ID_BYTES,
    check_create_request,
    check_text,
)
from services.runtime.opened_stream import opened
from services.runtime.session_ids import check_session_id
from services.runtime.user_ids import OPERATOR_USER_ID, guest_user_id
from services.session import codec, paging
from services.session.audit_log import AuditKind
from services.session.input_buckets import check_counts
from services.session.model import Actor, AutoReturn, Viewport
from services.session.orchestrator import SessionOrchestrator, SessionSpec
from services.session.webhook_delivery import WebhookStats

Context = grpc.aio.ServicerContext[Any, Any]

# Activity kind → (viewers delta, user input seen, viewer seen).
_ACTIVITY = {
    session_pb2.ACTIVITY_KIND_VIEWER_JOINED: (1, False, True),
    session_pb2.ACTIVITY_KIND_VIEWER_LEFT: (-1, False, False),
    session_pb2.ACTIVITY_KIND_USER_INPUT: (0, True, False),
    session_pb2.ACTIVITY_KIND_VIEWER_PRESENT: (0, False, True),
}


def _actor(message: session_pb2.Actor) -> Actor:
    if not message.user_id and not message.operator:
        raise InvalidArgument("actor.user_id is required (or actor.operator)")
    check_text(message.user_id, "actor.user_id", MAX_USER_ID_BYTES)
    if message.user_id == OPERATOR_USER_ID and not message.operator:
        raise InvalidArgument(f"user id {OPERATOR_USER_ID!r} is reserved for operators")
    if message.share_id and (
        message.operator or message.user_id != guest_user_id(message.share_id)
    ):
        raise InvalidArgument("a share's actor is user guest:<share_id>, not an operator")
    check_text(message.source_address, "actor.source_address", MAX_SOURCE_ADDRESS_BYTES)
    return Actor(
        user_id=message.user_id or OPERATOR_USER_ID,
        operator=message.operator,
        share_id=message.share_id,
        source_address=message.source_address,
    )


# An IPv6 address with a zone fits; anything longer is not an address.
MAX_SOURCE_ADDRESS_BYTES = 128
# An edge's detail object (counts, a mode) is small.
MAX_AUDIT_DETAIL_BYTES = 4096


def _audit_detail(detail_json: str) -> dict[str, Any]:
    check_text(detail_json, "event.detail_json", MAX_AUDIT_DETAIL_BYTES)
    try:
        detail = json.loads(detail_json or "{}")
    except ValueError:
        raise InvalidArgument("event.detail_json is not JSON") from None
    if not isinstance(detail, dict):
        raise InvalidArgument("event.detail_json must be a JSON object")
    return detail


def _session_id(session_id: str) -> str:
    return check_session_id(session_id)


class SessionServicer(session_pb2_grpc.SessionServiceServicer):
    def __init__(
        self, orchestrator: SessionOrchestrator, webhook_stats: WebhookStats | None = None
    ) -> None:
        self._sessions = orchestrator
        # None: webhooks are off (no BATON_WEBHOOK_URL).
        self._webhook_stats = webhook_stats

    async def CreateSession(
        self, request: session_pb2.CreateSessionRequest, context: Context
    ) -> session_pb2.CreateSessionResponse:
        actor = _actor(request.actor)
        check_create_request(request)
        viewport = None
        if request.HasField("viewport"):
            viewport = Viewport(request.viewport.width, request.viewport.height)
        spec = SessionSpec(
            task=request.task,
            url=request.url,
            max_steps=request.max_steps,
            steps=tuple(request.steps),
            viewport=viewport,
            planner=request.planner,
            hand_over=request.hand_over if request.HasField("hand_over") else None,
            record=request.record,
            pause_recording_during_takeover=request.pause_recording_during_takeover,
        )
        session = await self._sessions.create(actor, spec)
        return session_pb2.CreateSessionResponse(session=codec.to_proto(session))

    async def GetSession(
        self, request: session_pb2.GetSessionRequest, context: Context
    ) -> session_pb2.GetSessionResponse:
        full = await self._sessions.get_full(_actor(request.actor), _session_id(request.session_id))
        return session_pb2.GetSessionResponse(session=codec.to_proto(full.session, full.steps))

    async def ListSessions(
        self, request: session_pb2.ListSessionsRequest, context: Context
    ) -> session_pb2.ListSessionsResponse:
        actor = _actor(request.actor)
        size = paging.page_size(request.page_size)
        after = paging.decode_token(request.page_token)
        sessions = await self._sessions.list_sessions(actor, after)
        # Summaries: no steps (GetSession has them).
        chosen, next_token = paging.page(((s, codec.to_proto(s)) for s in sessions), size)
        return session_pb2.ListSessionsResponse(sessions=chosen, next_page_token=next_token)

    async def ChangeControl(
        self, request: session_pb2.ChangeControlRequest, context: Context
    ) -> session_pb2.ChangeControlResponse:
        action = codec.ACTION_FROM_PROTO.get(request.action)
        if action is None:
            raise InvalidArgument(f"unknown control action {request.action}")
        expected = request.expected_version if request.HasField("expected_version") else None
        to_user_id = check_text(request.to_user_id, "to_user_id", MAX_USER_ID_BYTES)
        auto_return = None
        if request.HasField("auto_return"):
            wanted = request.auto_return
            auto_return = AutoReturn(
                url_matches=check_text(wanted.url_matches, "url_matches", MAX_URL_BYTES),
                selector_appears=check_text(
                    wanted.selector_appears, "selector_appears", MAX_STEP_FIELD_BYTES
                ),
                idle_seconds=wanted.idle_seconds,
            )
        session = await self._sessions.change_control(
            _actor(request.actor),
            _session_id(request.session_id),
            action,
            expected,
            to_user_id,
            auto_return,
        )
        return session_pb2.ChangeControlResponse(session=codec.to_proto(session))

    async def RequestControl(
        self, request: session_pb2.RequestControlRequest, context: Context
    ) -> session_pb2.RequestControlResponse:
        session = await self._sessions.request_control(
            _actor(request.actor), _session_id(request.session_id)
        )
        return session_pb2.RequestControlResponse(session=codec.to_proto(session))

    async def EndSession(
        self, request: session_pb2.EndSessionRequest, context: Context
    ) -> session_pb2.EndSessionResponse:
        check_text(request.reason, "reason", MAX_REASON_BYTES)
        session = await self._sessions.end(
            _actor(request.actor),
            _session_id(request.session_id),
            request.reason or "ended by the user",
        )
        return session_pb2.EndSessionResponse(session=codec.to_proto(session))

    async def WatchSession(
        self, request: session_pb2.WatchSessionRequest, context: Context
    ) -> AsyncIterator[session_pb2.WatchSessionResponse]:
        first, changes = await self._sessions.watch(
            _actor(request.actor), _session_id(request.session_id)
        )
        # The first message is the session as it is now, steps and all; the
        # others carry what changed and the summary (session.proto, `Session`).
        yield session_pb2.WatchSessionResponse(
            created=session_pb2.SessionCreated(session=codec.to_proto(first.session, first.steps))
        )
        async for change in changes:
            event = codec.event_to_proto(change)
            if event is not None:
                yield event

    async def GetStreamAccess(
        self, request: session_pb2.GetStreamAccessRequest, context: Context
    ) -> session_pb2.GetStreamAccessResponse:
        access = await self._sessions.stream_access(
            _actor(request.actor), _session_id(request.session_id), request.edge_id
        )
        return session_pb2.GetStreamAccessResponse(
            upstream_url=access.upstream_url,
            view_only=access.view_only,
            session=codec.to_proto(access.session),
            upstream_password=access.upstream_password,
        )

    async def ReadRecording(
        self, request: session_pb2.ReadRecordingRequest, context: Context
    ) -> AsyncIterator[session_pb2.ReadRecordingResponse]:
        async for message in self._sessions.recordings.read(
            _actor(request.actor),
            _session_id(request.session_id),
            request.offset,
            request.length,
        ):
            yield session_pb2.ReadRecordingResponse(
                size=message.size, data=message.data, recording=message.recording
            )

    async def Cdp(
        self, request_iterator: AsyncIterator[session_pb2.CdpRequest], context: Context
    ) -> AsyncIterator[session_pb2.CdpResponse]:
        opening, commands = await opened(request_iterator)
        relayed = self._sessions.cdp(
            _actor(opening.actor),
            _session_id(opening.session_id),
            opening.reject_on_user_control,
            commands,
        )
        async for response in relayed:
            yield session_pb2.CdpResponse(response=response)

    async def RecordActivity(
        self, request: session_pb2.RecordActivityRequest, context: Context
    ) -> session_pb2.RecordActivityResponse:
        if request.kind not in _ACTIVITY:
            raise InvalidArgument(f"unknown activity kind {request.kind}")
        viewers_delta, input_seen, viewer_seen = _ACTIVITY[request.kind]
        check_counts(request.keys, request.pointer)
        await self._sessions.record_activity(
            _session_id(request.session_id),
            viewers_delta,
            input_seen,
            viewer_seen,
            request.edge_id,
            request.keys if input_seen else 0,
            request.pointer if input_seen else 0,
        )
        return session_pb2.RecordActivityResponse()

    async def AcknowledgeControl(
        self, request: session_pb2.AcknowledgeControlRequest, context: Context
    ) -> session_pb2.AcknowledgeControlResponse:
        if not request.edge_id:
            raise InvalidArgument("edge_id is required")
        await self._sessions.acknowledge_control(
            _session_id(request.session_id), request.edge_id, request.version
        )
        return session_pb2.AcknowledgeControlResponse()

    async def GetCapacity(
        self, request: session_pb2.GetCapacityRequest, context: Context
    ) -> session_pb2.GetCapacityResponse:
        capacity = self._sessions.capacity()
        return session_pb2.GetCapacityResponse(
            worker_hosts=capacity.worker_hosts,
            draining_hosts=capacity.draining_hosts,
            slots_total=capacity.slots_total,
            slots_held=capacity.slots_held,
            slots_warm=capacity.slots_warm,
            capacity_known=capacity.capacity_known,
        )

    async def GetWebhookStats(
        self, request: session_pb2.GetWebhookStatsRequest, context: Context
    ) -> session_pb2.GetWebhookStatsResponse:
        stats = self._webhook_stats
        if stats is None:
            return session_pb2.GetWebhookStatsResponse(enabled=False)
        return session_pb2.GetWebhookStatsResponse(
            enabled=True,
            attempts=stats.attempts,
            failed_attempts=stats.failed_attempts,
            delivered=stats.delivered,
            dropped=stats.dropped,
        )

    async def CreateShare(
        self, request: session_pb2.CreateShareRequest, context: Context
    ) -> session_pb2.CreateShareResponse:
        role = codec.SHARE_ROLE_FROM_PROTO.get(request.role)
        if role is None:
            raise InvalidArgument("role must be view or control")
        share = await self._sessions.shares.create(
            _actor(request.actor),
            _session_id(request.session_id),
            role,
            request.ttl_seconds,
            request.label,
        )
        return session_pb2.CreateShareResponse(share=codec.share_to_proto(share))

    async def ListShares(
        self, request: session_pb2.ListSharesRequest, context: Context
    ) -> session_pb2.ListSharesResponse:
        shares = await self._sessions.shares.list(
            _actor(request.actor), _session_id(request.session_id)
        )
        return session_pb2.ListSharesResponse(shares=[codec.share_to_proto(s) for s in shares])

    async def RevokeShare(
        self, request: session_pb2.RevokeShareRequest, context: Context
    ) -> session_pb2.RevokeShareResponse:
        share_id = check_text(request.share_id, "share_id", MAX_SHARE_ID_BYTES)
        await self._sessions.shares.revoke(
            _actor(request.actor), _session_id(request.session_id), share_id
        )
        return session_pb2.RevokeShareResponse()

    async def RecordAudit(
        self, request: session_pb2.RecordAuditRequest, context: Context
    ) -> session_pb2.RecordAuditResponse:
        event = request.event
        try:
            kind = AuditKind(event.kind)
        except ValueError:
            raise InvalidArgument(f"unknown audit event kind {event.kind!r}") from None
        if kind not in AuditKind.edge_reported():
            raise InvalidArgument(f"audit events of kind {kind.value} are not reported by edges")
        check_text(event.user_id, "event.user_id", MAX_USER_ID_BYTES)
        check_text(event.source_address, "event.source_address", MAX_SOURCE_ADDRESS_BYTES)
        await self._sessions.audit.record(
            _session_id(event.session_id),
            kind,
            event.user_id,
            event.source_address,
            _audit_detail(event.detail_json),
        )
        return session_pb2.RecordAuditResponse()

    async def ListAudit(
        self, request: session_pb2.ListAuditRequest, context: Context
    ) -> session_pb2.ListAuditResponse:
        actor = _actor(request.actor)
        session_id = _session_id(request.session_id) if request.session_id else None
        events = await self._sessions.audit.read(
            actor.operator, request.since.ToDatetime(tzinfo=UTC), session_id, request.limit
        )
        return session_pb2.ListAuditResponse(events=[codec.audit_to_proto(e) for e in events])
