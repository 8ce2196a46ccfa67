"""Auto-return over the orchestrator with worker twins: each condition returns
control exactly as the person's Return Control would (a hand-back report with
reason auto_return and the condition), and bad conditions are refused before
anything changes (docs/state-machine.md, "Auto-return")."""

from __future__ import annotations

import asyncio

import pytest

from baton.automation.v1 import automation_pb2
from services.runtime.errors import InvalidArgument
from services.runtime.user_ids import guest_user_id
from services.session.model import Action, Actor, AutoReturn, ControlState, Session, ShareRole
from tests.session.stores import store
from tests.session.test_orchestrator import ALICE, SPEC, Plane, plane

__all__ = ["plane", "store"]


async def take(plane: Plane, conditions: AutoReturn) -> Session:
    session = await plane.sessions.create(ALICE, SPEC)
    return await plane.sessions.change_control(
        ALICE, session.id, Action.TAKE_CONTROL, None, auto_return=conditions
    )


async def returned(plane: Plane, session_id: str) -> Session:
    """The session once control is back with the agent (5 s at most)."""
    for _ in range(100):
        current = await plane.sessions.get(ALICE, session_id)
        if current.state is ControlState.AI_CONTROL:
            return current
        await asyncio.sleep(0.05)
    raise AssertionError("control did not return by itself")


async def test_idle_seconds_return_control_once_the_person_is_idle(plane: Plane) -> None:
    session = await take(plane, AutoReturn(idle_seconds=30))
    assert session.auto_return == AutoReturn(idle_seconds=30)
    plane.clock.advance(20)
    # Input keeps it: counted from the last one.
    await plane.sessions.record_activity(session.id, 0, input_seen=True)
    plane.clock.advance(20)
    await asyncio.sleep(1.2)
    assert (await plane.sessions.get(ALICE, session.id)).state is ControlState.USER_CONTROL
    plane.clock.advance(11)
    back = await returned(plane, session.id)
    assert back.handback is not None
    assert (back.handback.reason, back.handback.condition) == ("auto_return", "idleSeconds")
    assert back.handback.returned_by == "alice" and back.auto_return is None
    assert back.timeline[-1].reason == "auto_return: idleSeconds"
    assert ("resume", session.id) in plane.automation.calls


async def test_a_matching_url_returns_control(plane: Plane) -> None:
    session = await take(plane, AutoReturn(url_matches=r"/dashboard(\?|$)"))
    plane.automation.page_url = "https://example.org/login"
    await asyncio.sleep(1.2)
    assert (await plane.sessions.get(ALICE, session.id)).state is ControlState.USER_CONTROL
    plane.automation.page_url = "https://example.org/dashboard?tab=1"
    back = await returned(plane, session.id)
    assert back.handback is not None and back.handback.condition == "urlMatches"


async def test_an_element_appearing_returns_control(plane: Plane) -> None:
    session = await take(plane, AutoReturn(selector_appears="#inbox"))
    await asyncio.sleep(1.2)
    assert (await plane.sessions.get(ALICE, session.id)).state is ControlState.USER_CONTROL
    plane.automation.selectors_present.add("#inbox")
    back = await returned(plane, session.id)
    assert back.handback is not None and back.handback.condition == "selectorAppears"


async def test_returning_by_hand_ends_the_watch(plane: Plane) -> None:
    session = await take(plane, AutoReturn(selector_appears="#inbox"))
    await plane.sessions.change_control(ALICE, session.id, Action.RETURN_CONTROL, None)
    back = await plane.sessions.get(ALICE, session.id)
    assert back.handback is not None and back.handback.reason == "return_control"
    plane.automation.selectors_present.add("#inbox")
    # Taken again without conditions: nothing returns it by itself.
    await plane.sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)
    await asyncio.sleep(1.2)
    assert (await plane.sessions.get(ALICE, session.id)).state is ControlState.USER_CONTROL


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        (AutoReturn(url_matches="(unclosed"), "not a pattern"),
        (AutoReturn(selector_appears="!not a selector"), "not a selector"),
        (AutoReturn(idle_seconds=-1), "idleSeconds"),
        (AutoReturn(idle_seconds=float("nan")), "idleSeconds"),
    ],
)
async def test_bad_conditions_are_refused_and_nothing_changes(
    plane: Plane, conditions: AutoReturn, message: str
) -> None:
    session = await plane.sessions.create(ALICE, SPEC)
    with pytest.raises(InvalidArgument, match=message):
        await plane.sessions.change_control(
            ALICE, session.id, Action.TAKE_CONTROL, None, auto_return=conditions
        )
    assert (await plane.sessions.get(ALICE, session.id)).state is ControlState.AI_CONTROL
    assert ("pause", session.id) not in plane.automation.calls


async def test_auto_return_is_for_take_control_only(plane: Plane) -> None:
    session = await plane.sessions.create(ALICE, SPEC)
    with pytest.raises(InvalidArgument, match="take_control only"):
        await plane.sessions.change_control(
            ALICE, session.id, Action.PAUSE, None, auto_return=AutoReturn(idle_seconds=5)
        )


async def test_a_request_user_step_sets_the_conditions_of_the_takeover_it_asks_for(
    plane: Plane,
) -> None:
    session = await plane.sessions.create(ALICE, SPEC)
    asked = automation_pb2.StartTaskResponse(
        seq=1,
        user_requested=automation_pb2.UserRequested(
            reason="sign in",
            auto_return=automation_pb2.AutoReturn(selector_appears="#dashboard"),
        ),
    )
    await plane.automation.feed(session.id).put(asked)
    for _ in range(100):
        waiting = await plane.sessions.get(ALICE, session.id)
        if waiting.user_request_auto_return is not None:
            break
        await asyncio.sleep(0.02)
    assert waiting.user_request_auto_return == AutoReturn(selector_appears="#dashboard")
    taken = await plane.sessions.change_control(ALICE, session.id, Action.TAKE_CONTROL, None)
    assert taken.auto_return == AutoReturn(selector_appears="#dashboard")
    plane.automation.selectors_present.add("#dashboard")
    back = await returned(plane, session.id)
    assert back.handback is not None and back.handback.condition == "selectorAppears"


async def test_a_guest_s_takeover_returns_by_itself_too(plane: Plane) -> None:
    session = await plane.sessions.create(ALICE, SPEC)
    share = await plane.sessions.shares.create(ALICE, session.id, ShareRole.CONTROL, 600, "")
    guest = Actor(guest_user_id(share.id), share_id=share.id)
    await plane.sessions.change_control(
        guest, session.id, Action.TAKE_CONTROL, None, auto_return=AutoReturn(idle_seconds=5)
    )
    plane.clock.advance(6)
    back = await returned(plane, session.id)
    assert back.handback is not None
    assert (back.handback.returned_by, back.handback.condition) == (guest.user_id, "idleSeconds")
