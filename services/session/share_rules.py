"""What a share's holder may do (README, "Sharing"): pure rules over a session.

Its holder acts as `guest:<share id>`: a view share may see the session and
its stream; a control share may also take and return control. Nothing else:
no other session, no ending, pausing, CDP or new shares. A share ends when it
expires, is revoked, or its session ends, whichever comes first.
"""

from __future__ import annotations

from datetime import datetime

from services.runtime.errors import PermissionDenied
from services.runtime.user_ids import OPERATOR_USER_ID, is_guest, share_id_of
from services.session.model import Action, Actor, Session, Share, ShareRole

# What a control share may do; a view share may do none of these.
_CONTROL_SHARE_ACTIONS = frozenset({Action.TAKE_CONTROL, Action.RETURN_CONTROL, Action.HAND_OVER})


def live_share(session: Session, share_id: str, now: datetime) -> Share | None:
    """The share, while it opens the session: not expired, revoked or outlived."""
    if session.state.terminal:
        return None
    for share in session.shares:
        if share.id == share_id and share.expires_at > now:
            return share
    return None


def check_action(actor: Actor, session: Session, action: Action, now: datetime) -> None:
    """Refuse a control action a share's holder may not take."""
    if not actor.share_id:
        return
    share = live_share(session, actor.share_id, now)
    if share is None or share.role is not ShareRole.CONTROL:
        raise PermissionDenied("a view share may watch the session, not change its control")
    if action not in _CONTROL_SHARE_ACTIONS:
        raise PermissionDenied(f"a share may take and return control, not {action.value}")


def refuse_share(actor: Actor, what: str) -> None:
    """A share opens its session's view and control only: refuse `what`."""
    if actor.share_id:
        raise PermissionDenied(f"a share's token cannot {what}")


def may_control(user_id: str, session: Session, now: datetime) -> bool:
    """Whether `user_id` may hold the session's control: its owner, an operator,
    or the guest of a live control share (who control is handed over to)."""
    if user_id in (session.owner_user_id, OPERATOR_USER_ID):
        return True
    if not is_guest(user_id):
        return False
    share = live_share(session, share_id_of(user_id), now)
    return share is not None and share.role is ShareRole.CONTROL


def may_see(actor: Actor, session: Session, now: datetime) -> bool:
    """Whether the actor reaches the session at all."""
    if actor.share_id:
        return live_share(session, actor.share_id, now) is not None
    return actor.operator or session.owner_user_id == actor.user_id
