"""Issue 12, findings 2 and 5 through the edge's REST API and stream (the real
session service behind it, twin workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from services.edge.auth import Principal
from services.edge.rate_limit import RateLimiter
from services.runtime.errors import ResourceExhausted
from services.session.settings import SessionSettings
from tests.conftest import INTERNAL_TOKEN
from tests.edge.harness import OPERATOR_TOKEN, Stack, bearer, running_stack, user_token

ALICE = user_token("alice")
BOB = user_token("bob")
SECRET = "correct-horse-battery-staple"


async def call(
    stack: Stack, method: str, path: str, token: str = ALICE, **kwargs: Any
) -> tuple[int, Any, dict[str, str]]:
    async with stack.http.request(
        method, f"{stack.url}{path}", headers=bearer(token), **kwargs
    ) as response:
        return response.status, await response.json(), dict(response.headers)


def test_the_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(per_s=2, burst=3, clock=lambda: now[0])
    alice, bob = Principal("alice"), Principal("bob")
    for _ in range(3):
        limiter.check(alice)
    with pytest.raises(ResourceExhausted) as refused:
        limiter.check(alice)
    assert refused.value.retry_after_s == 1
    limiter.check(bob)  # buckets are per user
    limiter.check(Principal("operator", operator=True))  # operators are not limited
    now[0] = 0.5  # one token back at 2 per second
    limiter.check(alice)
    with pytest.raises(ResourceExhausted):
        limiter.check(alice)


async def test_seventy_huge_tasks_get_400_and_listing_still_answers() -> None:
    # No rate limit here: this is about what gets stored.
    async with running_stack(max_body_bytes=64 * 1024, rate_limit_per_s=0) as stack:
        for _ in range(70):
            status, body, _ = await call(
                stack,
                "POST",
                "/api/browser-session",
                json={"task": "x" * 60_000, "url": "http://127.0.0.1:9/"},
            )
            assert status == 400, body
            assert body["error"]["message"] == "task is 60000 bytes; the limit is 4096 bytes"
        status, body, _ = await call(stack, "GET", "/api/browser-session", OPERATOR_TOKEN)
        assert (status, body) == (200, {"sessions": [], "nextPageToken": None})
        assert stack.display.slots == {}


async def test_a_user_over_the_session_quota_gets_429_while_others_create() -> None:
    settings = SessionSettings(internal_token=INTERNAL_TOKEN, max_sessions_per_user=2)
    async with running_stack(session_settings=settings) as stack:
        await stack.create_session(ALICE)
        await stack.create_session(ALICE)
        status, body, headers = await call(
            stack, "POST", "/api/browser-session", json={"task": "t", "url": "http://127.0.0.1:9/"}
        )
        assert status == 429, body
        assert body["error"]["code"] == "resource_exhausted"
        assert "BATON_MAX_SESSIONS_PER_USER=2" in body["error"]["message"]
        assert headers["Retry-After"] == "30"
        await stack.create_session(BOB)
        status, body, _ = await call(stack, "GET", "/api/browser-session", OPERATOR_TOKEN)
        assert len(body["sessions"]) == 3  # the refused create left nothing


async def test_the_rate_limit_answers_429_with_retry_after_and_recovers() -> None:
    async with running_stack(rate_limit_per_s=2.0, rate_limit_burst=3) as stack:
        statuses = []
        headers: dict[str, str] = {}
        for _ in range(5):
            status, _, headers = await call(stack, "GET", "/api/browser-session")
            statuses.append(status)
        assert statuses[:3] == [200, 200, 200]
        assert statuses[3:] == [429, 429]
        assert headers["Retry-After"] == "1"
        # Another user is not affected, nor an operator.
        assert (await call(stack, "GET", "/api/browser-session", BOB))[0] == 200
        assert (await call(stack, "GET", "/api/browser-session", OPERATOR_TOKEN))[0] == 200
        await asyncio.sleep(1.0)
        assert (await call(stack, "GET", "/api/browser-session"))[0] == 200


async def test_rest_pages_list_every_session_once() -> None:
    settings = SessionSettings(internal_token=INTERNAL_TOKEN, max_sessions_per_user=0)
    async with running_stack(session_settings=settings) as stack:
        created = {(await stack.create_session(ALICE))["id"] for _ in range(7)}
        seen: list[str] = []
        token = None
        while True:
            params = {"pageSize": "3", **({"pageToken": token} if token else {})}
            status, body, _ = await call(stack, "GET", "/api/browser-session", params=params)
            assert status == 200, body
            assert len(body["sessions"]) <= 3
            seen += [s["id"] for s in body["sessions"]]
            token = body["nextPageToken"]
            if token is None:
                break
        assert len(seen) == len(set(seen)) == 7 and set(seen) == created
        for bad in ({"pageSize": "-1"}, {"pageSize": "many"}, {"pageToken": "%%%"}):
            status, body, _ = await call(stack, "GET", "/api/browser-session", params=bad)
            assert status == 400, (bad, body)


async def test_a_password_filled_through_rest_is_never_returned_or_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_stack(max_body_bytes=64 * 1024) as stack:
        steps = [
            {"action": "goto", "url": "http://127.0.0.1:9/login"},
            {"action": "fill", "selector": "input[name=pw]", "value": SECRET},
            {"action": "type", "text": SECRET + "-typed"},
        ]
        session = await stack.create_session(ALICE, steps=steps)
        # Positive marker: the value went on to automation, which fills it in.
        started = stack.automation.started[str(session["id"])]
        assert started.steps[1].fill.value == SECRET
        answers = [session]
        answers.append((await call(stack, "GET", f"/api/browser-session/{session['id']}"))[1])
        answers.append((await call(stack, "GET", "/api/browser-session"))[1])
        for answer in answers:
            assert SECRET not in str(answer)
        assert SECRET not in caplog.text


async def test_a_user_with_too_many_viewers_gets_429_on_the_stream() -> None:
    async with running_stack(max_viewers_per_user=2) as stack:
        session = await stack.create_session(ALICE)
        async with contextlib.AsyncExitStack() as open_viewers:
            for _ in range(2):
                url = await stack.stream_url(ALICE, session["id"])
                await open_viewers.enter_async_context(
                    connect(url, subprotocols=["binary"], proxy=None)  # type: ignore[list-item]
                )
            url = await stack.stream_url(ALICE, session["id"])
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, subprotocols=["binary"], proxy=None):  # type: ignore[list-item]
                    pass
            assert refused.value.response.status_code == 429
            assert refused.value.response.headers["Retry-After"] == "10"
            # The operator is exempt.
            url = await stack.stream_url(OPERATOR_TOKEN, session["id"])
            async with connect(url, subprotocols=["binary"], proxy=None) as viewer:  # type: ignore[list-item]
                assert await viewer.recv()  # the RFB greeting: the path is live
        # Once the edge has closed them, alice may connect again.
        for _ in range(50):
            url = await stack.stream_url(ALICE, session["id"])
            try:
                async with connect(url, subprotocols=["binary"], proxy=None) as viewer:  # type: ignore[list-item]
                    assert await viewer.recv()
                break
            except InvalidStatus as exc:
                assert exc.response.status_code == 429
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the closed viewers still count")
