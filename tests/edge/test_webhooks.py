"""Webhooks from a real stack to a real receiver on loopback (issue 13, part 4).

Every event type arrives once, signed (checked with the hmac module); a
receiver answering 500 twice gets the event on the third attempt; a receiver
that never answers does not delay take_control; /metrics counts the attempts.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from services.display.settings import NumberRange
from services.session.webhook_delivery import WebhookSettings
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.harness import OPERATOR_TOKEN, bearer, user_token
from tests.session.webhook_receiver import WebhookReceiver, verify, webhook_receiver

# This test's own displays and VNC ports (issue 13 helpers: 2000-2029).
DISPLAYS = NumberRange(2005, 2008)
VNC_PORTS = NumberRange(22005, 22008)
ALICE = user_token("alice")
SECRET = "whsec-e2e-secret-0123456789"


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_verifier() -> Any:
    """The README's "Webhooks" example, run as written."""
    section = README.read_text().split("## Webhooks", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "README.md's Webhooks section has no python example"
    namespace: dict[str, Any] = {}
    exec(match.group(1), namespace)
    return namespace["baton_event"]


@dataclass
class Hooked:
    stack: FullStack
    receiver: WebhookReceiver


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def hooked(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hooked]:
    async with webhook_receiver() as receiver:
        # A long per-attempt timeout: the dead receiver below really holds requests.
        webhook = WebhookSettings(url=receiver.url, secret=SECRET, timeout_s=30, backoff_s=0.5)
        async with full_stack(
            tmp_path_factory.mktemp("webhooks"), DISPLAYS, VNC_PORTS, webhook=webhook
        ) as stack:
            yield Hooked(stack, receiver)


def of_session(receiver: WebhookReceiver, session_id: str) -> list[dict[str, Any]]:
    return [e for e in receiver.delivered() if e["sessionId"] == session_id]


def types_of(receiver: WebhookReceiver, session_id: str) -> list[str]:
    return [e["type"] for e in of_session(receiver, session_id)]


async def control(stack: FullStack, session_id: str, action: str) -> dict[str, Any]:
    answer: dict[str, Any] = await stack.request(
        "PUT", f"/api/browser-session/{session_id}/control", ALICE, {"action": action}
    )
    return answer


@pytest.mark.asyncio(loop_scope="module")
async def test_every_event_type_arrives_once_and_signed(hooked: Hooked) -> None:
    stack, receiver = hooked.stack, hooked.receiver
    session = await stack.request(
        "POST",
        "/api/browser-session",
        ALICE,
        {
            "task": "wait for a person, then finish",
            "url": stack.site.form_url,
            "steps": [
                {"action": "request_user", "reason": "type the word"},
                {"action": "click", "selector": "#finish"},
            ],
        },
    )
    sid = session["id"]
    await receiver.wait_until(lambda: "session.waiting_for_user" in types_of(receiver, sid))
    await control(stack, sid, "take_control")
    await control(stack, sid, "return_control")
    await receiver.wait_until(lambda: "task.completed" in types_of(receiver, sid))
    await stack.request("DELETE", f"/api/browser-session/{sid}", ALICE)
    await receiver.wait_until(lambda: "session.ended" in types_of(receiver, sid))

    failing = await stack.request(
        "POST",
        "/api/browser-session",
        ALICE,
        {
            "task": "click what is not there",
            "url": stack.site.form_url,
            "steps": [{"action": "click", "selector": "#missing", "timeoutMs": 300}],
        },
    )
    fid = failing["id"]
    await receiver.wait_until(lambda: "task.failed" in types_of(receiver, fid))
    await stack.request("DELETE", f"/api/browser-session/{fid}", ALICE)
    await receiver.wait_until(lambda: "session.ended" in types_of(receiver, fid))

    events = of_session(receiver, sid)
    assert Counter(e["type"] for e in events) == {
        # Ready (STARTING -> AI_CONTROL), take_control, return_control.
        "session.control_changed": 3,
        "session.waiting_for_user": 1,
        "task.completed": 1,
        "session.ended": 1,
    }
    actions = [e["data"]["action"] for e in events if e["type"] == "session.control_changed"]
    assert actions == [None, "take_control", "return_control"]
    waiting = next(e for e in events if e["type"] == "session.waiting_for_user")
    assert waiting["data"]["reason"] == "type the word"
    ended = next(e for e in events if e["type"] == "session.ended")
    assert ended["data"]["state"] == "ENDED"
    failed = next(e for e in of_session(receiver, fid) if e["type"] == "task.failed")
    assert "#missing" in failed["data"]["reason"]
    # Every request carries a valid, fresh signature over its raw body.
    assert receiver.requests and all(verify(SECRET, r.signature, r.body) for r in receiver.requests)
    assert not any(
        verify("not-the-secret-00000000", r.signature, r.body) for r in receiver.requests
    )


@pytest.mark.asyncio(loop_scope="module")
async def test_a_receiver_answering_500_twice_gets_the_event_on_the_third_attempt(
    hooked: Hooked,
) -> None:
    stack, receiver = hooked.stack, hooked.receiver
    session = await stack.request(
        "POST", "/api/browser-session", ALICE, {"task": "t", "url": stack.site.form_url}
    )
    sid = session["id"]
    await receiver.wait_until(lambda: "task.completed" in types_of(receiver, sid))
    receiver.fail_next = 2
    await stack.request("DELETE", f"/api/browser-session/{sid}", ALICE)
    await receiver.wait_until(lambda: "session.ended" in types_of(receiver, sid))
    tried = [r for r in receiver.requests if r.event["sessionId"] == sid]
    assert [(r.event["type"], r.status) for r in tried][-3:] == [
        ("session.ended", 500),
        ("session.ended", 500),
        ("session.ended", 200),
    ]
    assert len({r.body for r in tried[-3:]}) == 1
    async with stack.http.get(f"{stack.url}/metrics", headers=bearer(OPERATOR_TOKEN)) as answer:
        text = await answer.text()
    failed = next(
        line
        for line in text.splitlines()
        if line.startswith('baton_webhook_attempts_total{outcome="failed"}')
    )
    assert int(failed.split()[-1]) >= 2
    assert 'baton_webhook_events_total{outcome="delivered"}' in text


@pytest.mark.asyncio(loop_scope="module")
async def test_a_receiver_that_never_answers_does_not_delay_take_control(hooked: Hooked) -> None:
    stack, receiver = hooked.stack, hooked.receiver
    session = await stack.request(
        "POST", "/api/browser-session", ALICE, {"task": "t", "url": stack.site.form_url}
    )
    sid = session["id"]
    await receiver.wait_until(lambda: "task.completed" in types_of(receiver, sid))
    receiver.hang = True
    try:
        held = receiver.held
        started = time.monotonic()
        taken = await control(stack, sid, "take_control")
        took = time.monotonic() - started
        returned = await control(stack, sid, "return_control")
        # Positive marker: the receiver got both events and holds them unanswered.
        await receiver.wait_until(lambda: receiver.held >= held + 2)
        taken_again = await control(stack, sid, "take_control")
        # The task had completed: control returns to a finished session.
        assert (taken["state"], returned["state"], taken_again["state"]) == (
            "USER_CONTROL",
            "FINISHED",
            "USER_CONTROL",
        )
        # Not the 30 s a delivery attempt may take.
        assert took < 5, took
    finally:
        receiver.hang = False
    await stack.request("DELETE", f"/api/browser-session/{sid}", ALICE)
