"""Shares in the session service (README, "Sharing"): made, used and revoked over
the orchestrator with every store (the record carries them), workers twinned."""

from __future__ import annotations

import asyncio

import pytest

from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from services.runtime.limits import MAX_SHARES
from services.runtime.user_ids import guest_user_id
from services.session.model import Action, Actor, ControlState, EventKind, ShareRole
from tests.session.stores import store
from tests.session.test_orchestrator import ALICE, BOB, OPERATOR, SPEC, Plane, plane

__all__ = ["plane", "store"]


def guest(share_id: str) -> Actor:
    return Actor(guest_user_id(share_id), share_id=share_id)


async def test_a_view_share_sees_its_session_and_nothing_more(plane: Plane) -> None:
    sessions = plane.sessions
    session = await sessions.create(ALICE, SPEC)
    other = await sessions.create(ALICE, SPEC)
    share = await sessions.shares.create(ALICE, session.id, ShareRole.VIEW, 600, "support")
    viewer = guest(share.id)

    assert (await sessions.get(viewer, session.id)).id == session.id
    assert [s.id for s in await sessions.list_sessions(viewer)] == [session.id]
    access = await sessions.stream_access(viewer, session.id)
    assert access.view_only
    with pytest.raises(Unauthenticated):
        await sessions.get(viewer, other.id)
    with pytest.raises(PermissionDenied, match="view share"):
        await sessions.change_control(viewer, session.id, Action.TAKE_CONTROL, None)
    for action in (Action.PAUSE, Action.END):
        with pytest.raises(PermissionDenied):
            await sessions.change_control(viewer, session.id, action, None)
    with pytest.raises(PermissionDenied):
        await sessions.end(viewer, session.id, "bye")
    with pytest.raises(PermissionDenied):
        await sessions.shares.create(viewer, session.id, ShareRole.VIEW, 60, "")
    with pytest.raises(PermissionDenied):
        await sessions.create(viewer, SPEC)
    assert (await sessions.get(ALICE, session.id)).state is ControlState.AI_CONTROL


async def test_a_control_share_takes_and_returns_control_as_its_guest(plane: Plane) -> None:
    sessions = plane.sessions
    session = await sessions.create(ALICE, SPEC)
    share = await sessions.shares.create(ALICE, session.id, ShareRole.CONTROL, 600, "Dana")
    helper = guest(share.id)

    taken = await sessions.change_control(helper, session.id, Action.TAKE_CONTROL, None)
    assert (taken.state, taken.controller_user_id) == (ControlState.USER_CONTROL, helper.user_id)
    assert not (await sessions.stream_access(helper, session.id)).view_only
    with pytest.raises(PermissionDenied, match="not pause"):
        await sessions.change_control(helper, session.id, Action.PAUSE, None)
    returned = await sessions.change_control(helper, session.id, Action.RETURN_CONTROL, None)
    assert returned.state is ControlState.AI_CONTROL


async def test_revoked_expired_and_outlived_shares_open_nothing(plane: Plane) -> None:
    sessions = plane.sessions
    session = await sessions.create(ALICE, SPEC)
    revoked = await sessions.shares.create(ALICE, session.id, ShareRole.CONTROL, 600, "")
    expiring = await sessions.shares.create(ALICE, session.id, ShareRole.VIEW, 30, "")
    lasting = await sessions.shares.create(OPERATOR, session.id, ShareRole.VIEW, 600, "")
    assert {s.id for s in await sessions.shares.list(ALICE, session.id)} == {
        revoked.id,
        expiring.id,
        lasting.id,
    }

    await sessions.shares.revoke(ALICE, session.id, revoked.id)
    with pytest.raises(Unauthenticated, match="revoked"):
        await sessions.get(guest(revoked.id), session.id)
    with pytest.raises(Unauthenticated):
        await sessions.change_control(guest(revoked.id), session.id, Action.TAKE_CONTROL, None)
    with pytest.raises(NotFound, match="share"):
        await sessions.shares.revoke(ALICE, session.id, revoked.id)

    plane.clock.advance(31)
    with pytest.raises(Unauthenticated):
        await sessions.get(guest(expiring.id), session.id)
    assert [s.id for s in await sessions.shares.list(ALICE, session.id)] == [lasting.id]
    # Positive marker: the lasting share still opens the session until it ends.
    assert (await sessions.get(guest(lasting.id), session.id)).id == session.id

    await sessions.end(ALICE, session.id, "done")
    with pytest.raises(Unauthenticated):
        await sessions.get(guest(lasting.id), session.id)
    with pytest.raises(FailedPrecondition):
        await sessions.shares.create(ALICE, session.id, ShareRole.VIEW, 60, "")


async def test_only_the_owner_or_an_operator_shares_and_within_bounds(plane: Plane) -> None:
    sessions = plane.sessions
    session = await sessions.create(ALICE, SPEC)
    with pytest.raises(NotFound):
        await sessions.shares.create(BOB, session.id, ShareRole.VIEW, 60, "")
    share = await sessions.shares.create(ALICE, session.id, ShareRole.VIEW, 60, "")
    with pytest.raises(NotFound):
        await sessions.shares.revoke(BOB, session.id, share.id)
    with pytest.raises(NotFound):
        await sessions.shares.list(BOB, session.id)
    for ttl in (0, -1, 86401):
        with pytest.raises(InvalidArgument, match="ttlSeconds"):
            await sessions.shares.create(ALICE, session.id, ShareRole.VIEW, ttl, "")
    with pytest.raises(InvalidArgument, match="label"):
        await sessions.shares.create(ALICE, session.id, ShareRole.VIEW, 60, "x" * 129)
    for _ in range(MAX_SHARES - 1):
        await sessions.shares.create(ALICE, session.id, ShareRole.VIEW, 60, "")
    with pytest.raises(ResourceExhausted, match="revoke one"):
        await sessions.shares.create(ALICE, session.id, ShareRole.VIEW, 60, "")


async def test_watchers_are_told_of_shares_made_and_revoked(plane: Plane) -> None:
    sessions = plane.sessions
    session = await sessions.create(ALICE, SPEC)
    _, changes = await sessions.watch(ALICE, session.id)
    seen: list[tuple[EventKind, tuple[str, ...]]] = []

    async def follow() -> None:
        async for change in changes:
            seen.append((change.last_event.kind, tuple(s.id for s in change.shares)))
            if len(seen) == 2:
                return

    follower = asyncio.create_task(follow())
    share = await sessions.shares.create(ALICE, session.id, ShareRole.VIEW, 60, "")
    await sessions.shares.revoke(ALICE, session.id, share.id)
    await asyncio.wait_for(follower, 5)
    assert seen == [
        (EventKind.SHARES_CHANGED, (share.id,)),
        (EventKind.SHARES_CHANGED, ()),
    ]


async def test_a_viewer_asks_for_control_and_the_controller_hands_it_over(plane: Plane) -> None:
    sessions = plane.sessions
    session = await sessions.create(ALICE, SPEC)
    control = await sessions.shares.create(ALICE, session.id, ShareRole.CONTROL, 600, "Dana")
    view = await sessions.shares.create(ALICE, session.id, ShareRole.VIEW, 600, "")
    helper = guest(control.id)
    with pytest.raises(FailedPrecondition, match="take it instead"):
        await sessions.request_control(helper, session.id)
    await sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)
    with pytest.raises(FailedPrecondition, match="already hold"):
        await sessions.request_control(ALICE, session.id)
    with pytest.raises(PermissionDenied):
        await sessions.request_control(guest(view.id), session.id)

    asked = await sessions.request_control(helper, session.id)
    assert asked.last_event.kind is EventKind.CONTROL_REQUESTED
    assert (asked.last_event.message, asked.state) == (helper.user_id, ControlState.USER_CONTROL)
    # Only someone who may take control can be handed it.
    for nobody in ("bob", guest(view.id).user_id, "guest:no-such-share"):
        with pytest.raises(InvalidArgument, match="hand_over's `to`"):
            await sessions.change_control(ALICE, session.id, Action.HAND_OVER, None, nobody)
    with pytest.raises(PermissionDenied):
        await sessions.change_control(helper, session.id, Action.HAND_OVER, None, "alice")
    handed = await sessions.change_control(
        ALICE, session.id, Action.HAND_OVER, asked.version, helper.user_id
    )
    assert (handed.state, handed.controller_user_id) == (ControlState.USER_CONTROL, helper.user_id)
    # The agent was not resumed between the two people: it stays paused.
    assert ("resume", session.id) not in plane.automation.calls
    assert ("pause", session.id) in plane.automation.calls
    back = await sessions.change_control(helper, session.id, Action.HAND_OVER, None, "alice")
    assert back.controller_user_id == "alice"
