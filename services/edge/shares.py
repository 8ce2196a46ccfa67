"""Shares at the edge (README, "Sharing"): the REST body and answer, and which
connections a revoked share closes. The session service keeps the shares and
decides what their holders may do (services/session/share_rules.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from baton.session.v1 import session_pb2
from services.edge.auth import Principal, ShareScope
from services.edge.json_views import JsonObject, iso_timestamp
from services.edge.watch_hub import Event, event_kind
from services.runtime.errors import InvalidArgument, NotFound, PermissionDenied
from services.runtime.limits import MAX_SHARE_TTL_S

ROLES = {"view": session_pb2.SHARE_ROLE_VIEW, "control": session_pb2.SHARE_ROLE_CONTROL}
ROLE_NAMES = {number: name for name, number in ROLES.items()}
DEFAULT_TTL_S = 3600.0


def parse_share(body: Mapping[str, Any]) -> tuple[session_pb2.ShareRole.ValueType, float, str]:
    """POST .../shares: {"role": "view"|"control", "ttlSeconds"?, "label"?}."""
    unknown = sorted(set(body) - {"role", "ttlSeconds", "label"})
    if unknown:
        raise InvalidArgument(f"unknown field(s) in body: {', '.join(unknown)}")
    role = body.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidArgument(f"body.role must be 'view' or 'control', not {role!r}")
    ttl = body.get("ttlSeconds", DEFAULT_TTL_S)
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 0 < ttl <= MAX_SHARE_TTL_S:
        raise InvalidArgument(
            f"body.ttlSeconds must be a number more than 0 and at most {MAX_SHARE_TTL_S:g}"
        )
    label = body.get("label", "")
    if not isinstance(label, str):
        raise InvalidArgument("body.label must be a string")
    return ROLES[role], float(ttl), label


def share_json(share: session_pb2.Share) -> JsonObject:
    return {
        "id": share.id,
        "role": ROLE_NAMES.get(share.role, "view"),
        "label": share.label,
        "createdBy": share.created_by,
        "createdAt": iso_timestamp(share.create_time),
        "expiresAt": iso_timestamp(share.expire_time),
    }


def share_url(base_url: str, share: session_pb2.Share, session_id: str, token: str) -> str:
    """The page that opens the session for someone without an account: /embed,
    offering Take and Return Control for a control share; the token in the
    fragment, which browsers never send to a server."""
    control = "?control=1" if share.role == session_pb2.SHARE_ROLE_CONTROL else ""
    return f"{base_url.rstrip('/')}/embed/{session_id}{control}#token={token}"


def check_scope(principal: Principal, session_id: str | None) -> None:
    """A share's token reaches its own session only; `None`: no session at all
    (listing or creating sessions)."""
    share = principal.share
    if share is None:
        return
    if session_id is None:
        raise PermissionDenied("a share's token opens its one session only")
    if session_id != share.session_id:
        raise NotFound(f"session {session_id} not found")


def revoked(event: Event, share: ShareScope | None) -> bool:
    """Whether this event says `share` no longer opens its session."""
    if share is None or event_kind(event) != "shares_changed":
        return False
    return share.share_id not in event.shares_changed.live_share_ids
