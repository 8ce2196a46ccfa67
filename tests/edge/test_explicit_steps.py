"""Explicit steps are a contract (issue 13, part 2), on the real stack.

A sign-up form with name, email and an optional password field: the caller's
fill/fill/click steps run to the end (the page shows what was submitted) and
hand over to a person only when the create body asks for it
(`"handOver": {"onPasswordField": true}`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from baton.automation.v1 import automation_pb2, automation_pb2_grpc
from services.display.settings import NumberRange
from services.runtime.grpc_client import open_channel
from tests.conftest import INTERNAL_TOKEN
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.harness import user_token

# This test's own displays and VNC ports (issue 13 helpers: 2000-2029).
DISPLAYS = NumberRange(2000, 2003)
VNC_PORTS = NumberRange(22000, 22003)
ALICE = user_token("alice")
PASSWORD_MESSAGE = "the page asks for a password the agent does not have: please sign in"
SIGN_UP_STEPS = [
    {"action": "fill", "selector": "#name", "value": "Ada Lovelace"},
    {"action": "fill", "selector": "#email", "value": "ada@example.org"},
    {"action": "click", "selector": "#submit"},
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FullStack]:
    async with full_stack(
        tmp_path_factory.mktemp("explicit-steps"), DISPLAYS, VNC_PORTS
    ) as running:
        yield running


async def create(stack: FullStack, **extra: Any) -> dict[str, Any]:
    body = {"task": "sign up", "url": stack.site.signup_url, "steps": SIGN_UP_STEPS, **extra}
    session: dict[str, Any] = await stack.request("POST", "/api/browser-session", ALICE, body)
    return session


async def page_title(stack: FullStack, session_id: str) -> str:
    async with open_channel(f"127.0.0.1:{stack.automation.port}", INTERNAL_TOKEN) as channel:
        state = await automation_pb2_grpc.AutomationServiceStub(channel).GetPageState(
            automation_pb2.GetPageStateRequest(session_id=session_id)
        )
    return state.title


async def end(stack: FullStack, session_id: str) -> None:
    await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)


@pytest.mark.asyncio(loop_scope="module")
async def test_explicit_steps_fill_a_form_with_an_optional_password_field(
    stack: FullStack,
) -> None:
    session = await create(stack)
    done = await stack.wait_for_session(
        ALICE, session["id"], lambda s: s["task"]["status"] not in ("PENDING", "RUNNING")
    )
    assert done["task"]["status"] == "COMPLETED", done
    assert "userRequestReason" not in done
    assert stack.site.signups == [
        {"name": "Ada Lovelace", "email": "ada@example.org", "password": ""}
    ]
    # The page the agent left shows the submitted values.
    assert await page_title(stack, session["id"]) == "Signed up: Ada Lovelace <ada@example.org>"
    await end(stack, session["id"])


@pytest.mark.asyncio(loop_scope="module")
async def test_asked_to_the_explicit_steps_stop_at_the_password_field(stack: FullStack) -> None:
    stack.site.signups.clear()
    session = await create(stack, handOver={"onPasswordField": True})
    waiting = await stack.wait_for_session(
        ALICE,
        session["id"],
        lambda s: s["task"]["status"] != "PENDING" and s["task"]["status"] != "RUNNING",
    )
    assert waiting["task"]["status"] == "WAITING_FOR_USER", waiting
    assert waiting["task"]["reason"] == PASSWORD_MESSAGE
    assert waiting["userRequestReason"] == PASSWORD_MESSAGE
    full = await stack.request("GET", f"/api/browser-session/{session['id']}", ALICE)
    # Stopped before the first step: only the start page was opened.
    assert {step["index"] for step in full["steps"]} == {0}
    assert stack.site.signups == []
    await end(stack, session["id"])


@pytest.mark.asyncio(loop_scope="module")
async def test_a_hand_over_that_is_not_an_object_is_refused(stack: FullStack) -> None:
    for bad, message in (
        ({"handOver": True}, "body.handOver must be an object"),
        ({"handOver": {"onPasswordField": "yes"}}, "onPasswordField must be a boolean"),
        ({"handOver": {"onCaptcha": False}}, "unknown field(s) in body.handOver: onCaptcha"),
    ):
        async with stack.http.post(
            f"{stack.url}/api/browser-session",
            json={"task": "t", "url": stack.site.signup_url, **bad},
            headers={"Authorization": f"Bearer {ALICE}"},
        ) as response:
            answer = await response.json()
        assert response.status == 400, answer
        assert message in answer["error"]["message"]
