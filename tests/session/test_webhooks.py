"""Webhooks: which change is which event, the signature, and delivery to a real
receiver on loopback (retries, a dead receiver, drops)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import replace
from datetime import timedelta

import pytest

from baton.automation.v1 import automation_pb2
from services.runtime.settings import ConfigError, Env
from services.session import state_machine
from services.session.model import Action, Actor, ControlState, TaskStatus
from services.session.settings import webhook_settings
from services.session.task_projection import project
from services.session.webhook_delivery import WebhookSender, WebhookSettings, backoff
from services.session.webhooks import (
    CONTROL_CHANGED,
    ENDED,
    TASK_COMPLETED,
    TASK_FAILED,
    WAITING_FOR_USER,
    WebhookEvent,
    body_of,
    events_of_change,
    signature,
)
from tests.conftest import eventually
from tests.session.factories import T0, make_session
from tests.session.webhook_receiver import verify, webhook_receiver

SECRET = "whsec-test-secret-0123456789"
LATER = T0 + timedelta(seconds=1)
ALICE = Actor("alice")


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"type":"task.completed","sessionId":"s1","at":"2026-01-01T00:00:00.000Z","data":{}}'
    # Computed here with the hmac module, independently of services/session/webhooks.py.
    expected = hmac.new(SECRET.encode(), b"1767225600." + body, hashlib.sha256).hexdigest()
    assert signature(SECRET, 1767225600, body) == f"t=1767225600,v1={expected}"
    assert signature(SECRET, 1767225601, body) != f"t=1767225601,v1={expected}"
    assert signature("another-secret-000000", 1767225600, body) != signature(
        SECRET, 1767225600, body
    )


def test_the_body_is_type_session_at_and_data() -> None:
    event = WebhookEvent(TASK_FAILED, "s1", T0, {"reason": "step 1 failed"})
    assert json.loads(body_of(event)) == {
        "type": "task.failed",
        "sessionId": "s1",
        "at": T0.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": {"reason": "step 1 failed"},
    }


def test_each_change_makes_its_event_and_bookkeeping_none() -> None:
    starting = make_session(state=ControlState.STARTING)
    ready = state_machine.mark_ready(starting, LATER)
    assert [e.type for e in events_of_change(starting, ready)] == [CONTROL_CHANGED]
    taken = state_machine.apply(ready, Action.TAKE_CONTROL, ALICE, LATER)
    (changed,) = events_of_change(ready, taken)
    assert changed.type == CONTROL_CHANGED
    assert changed.data == {
        "action": "take_control",
        "state": "USER_CONTROL",
        "controller": "user",
        "controllerUserId": "alice",
        "version": taken.version,
    }
    asked = project(
        ready,
        automation_pb2.StartTaskResponse(
            seq=1, user_requested=automation_pb2.UserRequested(reason="solve it")
        ),
        LATER,
    )
    (waiting,) = events_of_change(ready, asked)
    assert (waiting.type, waiting.data["reason"]) == (WAITING_FOR_USER, "solve it")
    # The status change that follows the request says nothing new.
    again = project(
        asked,
        automation_pb2.StartTaskResponse(
            seq=2,
            status_changed=automation_pb2.TaskStatusChanged(
                status=automation_pb2.TASK_STATUS_WAITING_FOR_USER, reason="solve it"
            ),
        ),
        LATER,
    )
    assert events_of_change(asked, again) == []
    for status, kind in ((TaskStatus.COMPLETED, TASK_COMPLETED), (TaskStatus.FAILED, TASK_FAILED)):
        done = replace(ready, task=replace(ready.task, status=status, reason="why"))
        assert [(e.type, e.data["reason"]) for e in events_of_change(ready, done)] == [
            (kind, "why")
        ]
    ended = state_machine.finish(taken, LATER, "the user ended it", failed=False)
    assert [(e.type, e.data["reason"]) for e in events_of_change(taken, ended)] == [
        (ENDED, "the user ended it")
    ]
    viewers = replace(ready, viewer_count=3)
    assert events_of_change(ready, viewers) == []


def test_settings_need_a_secret_and_an_http_url() -> None:
    assert not webhook_settings(Env({})).enabled
    with pytest.raises(ConfigError, match="BATON_WEBHOOK_SECRET"):
        webhook_settings(Env({"BATON_WEBHOOK_URL": "http://127.0.0.1:9/"}))
    with pytest.raises(ConfigError, match="not an http"):
        webhook_settings(Env({"BATON_WEBHOOK_URL": "ftp://x/", "BATON_WEBHOOK_SECRET": SECRET}))
    settings = webhook_settings(
        Env({"BATON_WEBHOOK_URL": "https://hooks.example/", "BATON_WEBHOOK_SECRET": SECRET})
    )
    assert settings.enabled and SECRET not in repr(settings)
    assert [backoff(settings, n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert backoff(settings, 20) == 30.0


def event(kind: str = TASK_COMPLETED) -> WebhookEvent:
    return WebhookEvent(kind, "s1", T0, {"reason": "done"})


async def test_a_receiver_failing_twice_gets_the_event_on_the_third_attempt() -> None:
    async with webhook_receiver() as receiver:
        receiver.fail_next = 2
        sender = WebhookSender(WebhookSettings(url=receiver.url, secret=SECRET, backoff_s=0.1))
        try:
            started = time.monotonic()
            sender.send(event())
            await receiver.wait_until(lambda: len(receiver.requests) == 3)
            elapsed = time.monotonic() - started
            await eventually(lambda: sender.stats.delivered == 1, 10)
        finally:
            await sender.close()
    assert [r.status for r in receiver.requests] == [500, 500, 200]
    # One body, each attempt signed afresh and valid.
    assert len({r.body for r in receiver.requests}) == 1
    assert all(verify(SECRET, r.signature, r.body) for r in receiver.requests)
    assert receiver.delivered()[0]["type"] == TASK_COMPLETED
    # Backoff: 0.1 s, then 0.2 s.
    assert elapsed >= 0.3
    stats = sender.stats
    assert (stats.attempts, stats.failed_attempts, stats.delivered, stats.dropped) == (3, 2, 1, 0)


async def test_a_dead_receiver_does_not_hold_the_sender_and_events_are_dropped() -> None:
    async with webhook_receiver() as receiver:
        receiver.hang = True
        sender = WebhookSender(
            WebhookSettings(
                url=receiver.url,
                secret=SECRET,
                timeout_s=0.3,
                max_attempts=2,
                backoff_s=0.05,
                max_pending=2,
            )
        )
        try:
            started = time.monotonic()
            for _ in range(3):
                sender.send(event())
            # send returned at once although nothing was answered.
            assert time.monotonic() - started < 0.05
            await receiver.wait_until(lambda: receiver.held >= 2)
            # The third found two in delivery: dropped at once.
            assert sender.stats.dropped == 1
            await eventually(lambda: sender.stats.dropped == 3, 10)
        finally:
            await sender.close()
    stats = sender.stats
    assert (stats.attempts, stats.failed_attempts, stats.delivered) == (4, 4, 0)
