"""Shares made and revoked: one session opened to someone without an account.

A share belongs to its session's record, so every replica and every edge sees
it made and revoked (a SHARES_CHANGED event); what its holder may do is in
share_rules.py (README, "Sharing").
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import datetime, timedelta

from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from services.runtime.limits import MAX_SHARE_LABEL_BYTES, MAX_SHARE_TTL_S, MAX_SHARES, check_text
from services.session.audit_log import AuditKind, AuditTrail
from services.session.model import Actor, EventKind, LastEvent, Session, Share, ShareRole
from services.session.records import SessionRecords
from services.session.share_rules import live_share, refuse_share


def _shares_changed(session: Session, shares: tuple[Share, ...], now: datetime) -> Session:
    return replace(
        session,
        shares=shares,
        version=session.version + 1,
        updated_at=now,
        last_event=LastEvent(EventKind.SHARES_CHANGED),
    )


class Shares:
    def __init__(self, records: SessionRecords, audit: AuditTrail) -> None:
        self._records = records
        self._audit = audit

    async def create(
        self, actor: Actor, session_id: str, role: ShareRole, ttl_s: float, label: str
    ) -> Share:
        """A new share of the actor's session (its owner's or, for operators, any)."""
        refuse_share(actor, "make shares")
        if not 0 < ttl_s <= MAX_SHARE_TTL_S:
            raise InvalidArgument(
                f"ttlSeconds must be more than 0 and at most {MAX_SHARE_TTL_S:g} "
                "(a share ends with its session anyway)"
            )
        check_text(label, "label", MAX_SHARE_LABEL_BYTES)
        await self._records.get_owned(actor, session_id)
        now = self._records.clock()
        share = Share(
            id=secrets.token_hex(8),
            role=role,
            created_by=actor.user_id,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_s),
            label=label,
        )

        def change(session: Session) -> Session:
            if session.state.terminal:
                raise FailedPrecondition(f"session {session_id} is {session.state.value}")
            live = tuple(s for s in session.shares if s.expires_at > now)
            if len(live) >= MAX_SHARES:
                raise ResourceExhausted(
                    f"session {session_id} has {MAX_SHARES} live shares: revoke one first"
                )
            return _shares_changed(session, (*live, share), now)

        await self._records.update(session_id, change)
        # Never the token: the id names the share.
        detail = {"shareId": share.id, "role": role.value, "ttlSeconds": ttl_s, "label": label}
        await self._audit.record(
            session_id, AuditKind.SHARE_CREATED, actor.user_id, actor.source_address, detail
        )
        return share

    async def list(self, actor: Actor, session_id: str) -> tuple[Share, ...]:
        """The session's shares that still open it."""
        refuse_share(actor, "list shares")
        session = (await self._records.get_owned(actor, session_id)).session
        now = self._records.clock()
        return tuple(s for s in session.shares if live_share(session, s.id, now))

    async def revoke(self, actor: Actor, session_id: str, share_id: str) -> None:
        """End a share now: its token opens nothing, edges close what it opened."""
        refuse_share(actor, "revoke shares")
        await self._records.get_owned(actor, session_id)
        now = self._records.clock()

        def change(session: Session) -> Session:
            kept = tuple(s for s in session.shares if s.id != share_id)
            if len(kept) == len(session.shares):
                raise NotFound(f"share {share_id} of session {session_id} not found")
            return _shares_changed(session, kept, now)

        await self._records.update(session_id, change)
        await self._audit.record(
            session_id,
            AuditKind.SHARE_REVOKED,
            actor.user_id,
            actor.source_address,
            {"shareId": share_id},
        )
