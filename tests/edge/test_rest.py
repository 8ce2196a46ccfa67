"""The REST contract (docs/openapi.json), against the real session service (twin workers)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from baton.automation.v1 import automation_pb2
from tests.conftest import free_port
from tests.edge.harness import (
    OPERATOR_TOKEN,
    Stack,
    bearer,
    running_stack,
    user_token,
)

ALICE = user_token("alice")
BOB = user_token("bob")


async def call(
    stack: Stack, method: str, path: str, token: str | None = ALICE, **kwargs: Any
) -> tuple[int, Any]:
    headers = {**(bearer(token) if token is not None else {}), **kwargs.pop("headers", {})}
    async with stack.http.request(
        method, f"{stack.url}{path}", headers=headers, **kwargs
    ) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


def assert_error(status: int, body: Any, expected_status: int, code: str) -> None:
    assert status == expected_status, body
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in body["error"]["message"]


async def test_create_returns_the_session_in_design_shape(stack: Stack) -> None:
    status, session = await call(
        stack,
        "POST",
        "/api/browser-session",
        json={
            "task": "fill the form",
            "url": "http://127.0.0.1:9/form",
            "maxSteps": 5,
            "steps": [{"action": "goto", "url": "http://127.0.0.1:9/form"}],
            "viewport": {"width": 1024, "height": 768},
        },
    )
    assert status == 201
    assert session["state"] == "AI_CONTROL"
    assert session["controller"] == "ai"
    assert session["controllerUserId"] is None
    assert session["task"] == {
        "text": "fill the form",
        "url": "http://127.0.0.1:9/form",
        "maxSteps": 5,
        "status": session["task"]["status"],
        "stepsCompleted": 0,
    }
    # A summary: the step count, no steps (GET has them).
    assert session["stepCount"] == 0 and "steps" not in session
    assert isinstance(session["version"], int)
    assert session["createdAt"].endswith("Z")
    started = stack.automation.started[session["id"]]
    assert started.steps[0].goto.url == "http://127.0.0.1:9/form"
    assert (started.viewport.width, started.viewport.height) == (1024, 768)


async def test_get_and_list_show_only_the_callers_sessions(stack: Stack) -> None:
    mine = await stack.create_session(ALICE)
    theirs = await stack.create_session(BOB)
    status, body = await call(stack, "GET", "/api/browser-session")
    assert status == 200
    assert [s["id"] for s in body["sessions"]] == [mine["id"]]
    status, body = await call(stack, "GET", f"/api/browser-session/{mine['id']}")
    assert (status, body["id"]) == (200, mine["id"])
    status, body = await call(stack, "GET", f"/api/browser-session/{theirs['id']}")
    assert_error(status, body, 404, "not_found")
    status, body = await call(stack, "GET", "/api/browser-session/no-such-session")
    assert_error(status, body, 404, "not_found")
    status, body = await call(stack, "GET", "/api/browser-session", token=OPERATOR_TOKEN)
    assert {s["id"] for s in body["sessions"]} == {mine["id"], theirs["id"]}


async def test_get_has_the_steps_and_the_list_and_control_answers_summaries(
    stack: Stack,
) -> None:
    session = await stack.create_session(ALICE)
    feed = stack.automation.feed(str(session["id"]))
    for index in range(3):
        feed.put_nowait(
            automation_pb2.StartTaskResponse(
                step=automation_pb2.StepEvent(
                    index=index, action="click", status=automation_pb2.STEP_STATUS_SUCCEEDED
                )
            )
        )
    path = f"/api/browser-session/{session['id']}"
    for _ in range(200):
        status, got = await call(stack, "GET", path)
        if got["stepCount"] == 3:
            break
        await asyncio.sleep(0.02)
    assert status == 200 and got["stepCount"] == 3
    assert [(s["index"], s["status"]) for s in got["steps"]] == [
        (0, "succeeded"),
        (1, "succeeded"),
        (2, "succeeded"),
    ]
    status, listed = await call(stack, "GET", "/api/browser-session")
    (summary,) = listed["sessions"]
    assert (summary["stepCount"], "steps" in summary) == (3, False)
    assert set(summary) == set(got) - {"steps"}
    taken = await stack.control(ALICE, session["id"], "take_control")
    assert (taken["stepCount"], "steps" in taken) == (3, False)


async def test_control_round_trip_and_refusals(stack: Stack) -> None:
    session = await stack.create_session(ALICE)
    path = f"/api/browser-session/{session['id']}/control"
    status, taken = await call(stack, "PUT", path, json={"action": "take_control"})
    assert status == 200
    assert (taken["state"], taken["controller"], taken["controllerUserId"]) == (
        "USER_CONTROL",
        "user",
        "alice",
    )
    assert taken["version"] > session["version"]
    assert ("pause", session["id"]) in stack.automation.calls
    status, body = await call(stack, "PUT", path, json={"action": "pause"})
    assert_error(status, body, 409, "failed_precondition")
    status, body = await call(
        stack,
        "PUT",
        path,
        json={"action": "return_control", "expectedVersion": session["version"]},
    )
    assert_error(status, body, 409, "conflict")
    status, body = await call(stack, "PUT", path, json={"action": "dance"})
    assert_error(status, body, 400, "invalid_argument")
    status, body = await call(stack, "PUT", path, json={"action": "take_control"}, token=BOB)
    assert_error(status, body, 404, "not_found")
    status, returned = await call(
        stack,
        "PUT",
        path,
        json={"action": "return_control", "expectedVersion": taken["version"]},
    )
    assert status == 200
    assert (returned["state"], returned["controller"]) == ("AI_CONTROL", "ai")
    assert ("resume", session["id"]) in stack.automation.calls


async def test_pause_and_resume(stack: Stack) -> None:
    session = await stack.create_session(ALICE)
    path = f"/api/browser-session/{session['id']}/control"
    status, paused = await call(stack, "PUT", path, json={"action": "pause"})
    assert (status, paused["state"], paused["controller"]) == (200, "PAUSED", None)
    status, body = await call(stack, "PUT", path, json={"action": "return_control"})
    assert_error(status, body, 409, "failed_precondition")
    status, resumed = await call(stack, "PUT", path, json={"action": "resume"})
    assert (status, resumed["state"]) == (200, "AI_CONTROL")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        # Deep enough to exhaust the JSON decoder's recursion limit.
        (b'{"task": ' + b"[" * 4000, "application/json"),
        # Valid JSON, but lone surrogates no protobuf string (or error message) can carry.
        (b'{"\\ud800": 1}', "application/json"),
        (b'{"task": "\\ud800", "url": "http://127.0.0.1:9/"}', "application/json"),
        (
            b'{"task": "t", "url": "http://127.0.0.1:9/",'
            b' "steps": [{"action": "type", "text": "\\udfff"}]}',
            "application/json",
        ),
        (b'{"task": "t"}', "application/json"),
        (b'{"task": "t", "url": "http://127.0.0.1:9/", "maxSteps": "ten"}', "application/json"),
        (
            b'{"task": "t", "url": "http://127.0.0.1:9/", "steps": [{"action": "fly"}]}',
            "application/json",
        ),
    ],
)
async def test_create_rejects_invalid_bodies(stack: Stack, body: bytes, content_type: str) -> None:
    status, answer = await call(
        stack,
        "POST",
        "/api/browser-session",
        data=body,
        headers={**bearer(ALICE), "Content-Type": content_type},
    )
    assert_error(status, answer, 400, "invalid_argument")
    assert stack.automation.started == {}


async def test_oversize_bodies_get_413(stack: Stack) -> None:
    big = {"task": "x" * 5000, "url": "http://127.0.0.1:9/"}
    status, body = await call(stack, "POST", "/api/browser-session", json=big)
    assert_error(status, body, 413, "payload_too_large")
    session = await stack.create_session(ALICE)

    async def chunks() -> Any:
        # No Content-Length: the limit applies while reading.
        yield b'{"action": "pause", "padding": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    status, body = await call(
        stack, "PUT", f"/api/browser-session/{session['id']}/control", data=chunks()
    )
    assert_error(status, body, 413, "payload_too_large")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {OPERATOR_TOKEN}"},
        bearer(user_token("alice").replace("e", "f", 1)),
    ],
)
async def test_unauthenticated_requests_get_401(stack: Stack, headers: dict[str, str]) -> None:
    for method, path in [
        ("GET", "/api/browser-session"),
        ("POST", "/api/browser-session"),
        ("GET", "/api/browser-session/x"),
        ("PUT", "/api/browser-session/x/control"),
        ("GET", "/api/browser-session/x/stream"),
        ("DELETE", "/api/browser-session/x"),
    ]:
        async with stack.http.request(
            method, f"{stack.url}{path}", headers=headers, json={}
        ) as response:
            body = await response.json()
            assert_error(response.status, body, 401, "unauthenticated")
            assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_stream_answer(stack: Stack) -> None:
    session = await stack.create_session(ALICE)
    status, body = await call(stack, "GET", f"/api/browser-session/{session['id']}/stream")
    assert status == 200
    assert set(body) == {"url", "viewOnly", "expiresAt"}
    prefix = f"ws://127.0.0.1:{stack.edge.port}/api/browser-session/{session['id']}/stream/ws"
    assert body["url"].startswith(prefix + "?token=")
    assert body["viewOnly"] is True
    assert body["expiresAt"].endswith("Z")
    await stack.control(ALICE, session["id"], "take_control")
    status, body = await call(stack, "GET", f"/api/browser-session/{session['id']}/stream")
    assert body["viewOnly"] is False
    status, body = await call(
        stack, "GET", f"/api/browser-session/{session['id']}/stream", token=BOB
    )
    assert_error(status, body, 404, "not_found")


async def test_delete_ends_the_session_and_releases_its_slot(stack: Stack) -> None:
    session = await stack.create_session(ALICE)
    slot_ids = list(stack.display.slots)
    status, body = await call(stack, "DELETE", f"/api/browser-session/{session['id']}", token=BOB)
    assert_error(status, body, 404, "not_found")
    status, ended = await call(stack, "DELETE", f"/api/browser-session/{session['id']}")
    assert status == 200
    assert ended["state"] == "ENDED"
    assert ended["controller"] is None
    assert ended["endedReason"]
    assert stack.display.slots == {}
    assert stack.display.released == slot_ids
    assert ("close", session["id"]) in stack.automation.calls
    status, body = await call(
        stack, "PUT", f"/api/browser-session/{session['id']}/control", json={"action": "resume"}
    )
    assert_error(status, body, 409, "failed_precondition")


async def test_no_capacity_gives_429() -> None:
    async with running_stack(capacity=1) as stack:
        await stack.create_session(ALICE)
        status, body = await call(
            stack,
            "POST",
            "/api/browser-session",
            json={"task": "t", "url": "http://127.0.0.1:9/"},
        )
        assert_error(status, body, 429, "resource_exhausted")


async def test_unreachable_session_service_gives_503() -> None:
    async with running_stack(session_address=f"127.0.0.1:{free_port()}") as stack:
        status, body = await call(stack, "GET", "/api/browser-session", token=OPERATOR_TOKEN)
        assert_error(status, body, 503, "unavailable")
        # Not gRPC's own text, which names internal addresses.
        assert body["error"]["message"] == "the session service is unavailable"
        status, body = await call(stack, "GET", "/healthz", token=None)
        assert_error(status, body, 503, "unavailable")
        status, text = await call(stack, "GET", "/metrics", token=OPERATOR_TOKEN)
        assert "baton_session_service_up 0" in text


async def test_healthz(stack: Stack) -> None:
    assert await call(stack, "GET", "/healthz", token=None) == (200, {"status": "ok"})


async def test_metrics_count_sessions_handoffs_and_steps(stack: Stack) -> None:
    session = await stack.create_session(ALICE)
    await stack.create_session(BOB)
    await stack.control(ALICE, session["id"], "take_control")
    await stack.control(ALICE, session["id"], "return_control")
    # Session counts follow the edge's WatchSession feeds, a moment behind.
    for _ in range(100):
        status, text = await call(stack, "GET", "/metrics", token=OPERATOR_TOKEN)
        assert status == 200
        if 'baton_sessions{state="AI_CONTROL"} 2' in text:
            break
        await asyncio.sleep(0.05)
    assert 'baton_sessions{state="AI_CONTROL"} 2' in text
    assert 'baton_handoffs_total{action="take_control"} 1' in text
    assert 'baton_handoffs_total{action="return_control"} 1' in text
    assert "baton_session_service_up 1" in text


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("DELETE", ""), ("PUT", "/control"), ("GET", "/stream")],
)
@pytest.mark.parametrize("session_id", ["x" * 20_000, "a.b", "%C3%A9"])
async def test_malformed_session_ids_are_400_before_any_call(
    stack: Stack, method: str, suffix: str, session_id: str
) -> None:
    status, body = await call(
        stack,
        method,
        f"/api/browser-session/{session_id}{suffix}",
        json={"action": "take_control"} if suffix == "/control" else None,
    )
    # Was 429 "metadata size exceeds hard limit" for the 20 KB id.
    assert_error(status, body, 400, "invalid_argument")
    assert len(body["error"]["message"]) < 200


async def test_metrics_need_the_operator_token_or_the_metrics_token() -> None:
    async with running_stack(metrics_token="scrape-only-token") as stack:
        status, body = await call(stack, "GET", "/metrics", token=None)
        assert_error(status, body, 401, "unauthenticated")
        assert "BATON_METRICS_TOKEN" in body["error"]["message"]
        status, body = await call(stack, "GET", "/metrics", token="wrong")
        assert_error(status, body, 401, "unauthenticated")
        status, body = await call(stack, "GET", "/metrics", token=ALICE)
        assert_error(status, body, 403, "permission_denied")
        for token in (OPERATOR_TOKEN, "scrape-only-token"):
            status, text = await call(stack, "GET", "/metrics", token=token)
            assert status == 200 and "baton_session_service_up 1" in text
        # The metrics token opens nothing else.
        status, body = await call(stack, "GET", "/api/browser-session", token="scrape-only-token")
        assert_error(status, body, 401, "unauthenticated")


async def test_a_scrape_lists_no_sessions(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    first = await stack.create_session(ALICE)
    await stack.create_session(BOB)
    await stack.control(ALICE, first["id"], "take_control")

    async def no_listing(*args: object) -> None:
        raise AssertionError("a scrape must not list sessions")

    monkeypatch.setattr(stack.edge.sessions, "list", no_listing)
    # From the WatchSession feeds this edge follows, kept current a moment behind.
    for _ in range(100):
        status, text = await call(stack, "GET", "/metrics", token=OPERATOR_TOKEN)
        assert status == 200
        if (
            'baton_sessions{state="USER_CONTROL"} 1' in text
            and 'baton_sessions{state="AI_CONTROL"} 1' in text
        ):
            break
        await asyncio.sleep(0.05)
    assert 'baton_sessions{state="AI_CONTROL"} 1' in text
    assert 'baton_sessions{state="USER_CONTROL"} 1' in text
    await stack.control(ALICE, first["id"], "end")
    for _ in range(100):
        status, text = await call(stack, "GET", "/metrics", token=OPERATOR_TOKEN)
        if 'baton_sessions{state="USER_CONTROL"}' not in text:
            break
        await asyncio.sleep(0.02)
    assert 'baton_sessions{state="USER_CONTROL"}' not in text
    assert 'baton_sessions{state="AI_CONTROL"} 1' in text


async def test_unknown_paths_and_methods_answer_json_errors(stack: Stack) -> None:
    status, body = await call(stack, "GET", "/api/nothing-here")
    assert_error(status, body, 404, "not_found")
    status, body = await call(stack, "PATCH", "/api/browser-session")
    assert_error(status, body, 405, "method_not_allowed")
    # Allow names every method of the path, not those of one route (OPTIONS
    # answers every path: tests/docs/test_rest_contract.py).
    for path, methods in (
        ("/api/browser-session", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("/api/browser-session/abc", {"GET", "HEAD", "OPTIONS", "DELETE"}),
        ("/api/browser-session/abc/stream", {"GET", "HEAD", "OPTIONS"}),
    ):
        async with stack.http.request("PATCH", f"{stack.url}{path}") as response:
            assert response.status == 405
            allowed = {method.strip() for method in response.headers["Allow"].split(",")}
            assert allowed == methods, path


async def test_integral_numbers_are_integers_and_null_means_absent(stack: Stack) -> None:
    session: dict[str, Any] = await stack.create_session(ALICE, maxSteps=4.0, viewport=None)
    assert session["task"]["maxSteps"] == 4
    status, body = await call(
        stack,
        "PUT",
        f"/api/browser-session/{session['id']}/control",
        json={"action": "take_control", "expectedVersion": float(session["version"])},
    )
    assert status == 200, body
    for fraction in ({"maxSteps": 4.5}, {"maxSteps": True}, {"maxSteps": "4"}):
        status, body = await call(
            stack,
            "POST",
            "/api/browser-session",
            json={"task": "t", "url": "http://127.0.0.1:9/", **fraction},
        )
        assert_error(status, body, 400, "invalid_argument")


async def test_openapi_lists_exactly_the_rest_endpoints(stack: Stack) -> None:
    status, document = await call(stack, "GET", "/openapi.json", token=None)
    assert status == 200
    documented = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    served = set()
    for route in stack.edge.app.rest_routes:
        # HEAD and OPTIONS are HTTP's own, answered for every route.
        for method in (route.methods or set()) - {"HEAD", "OPTIONS"}:
            served.add((method, route.path.replace("{session_id}", "{id}")))
    assert documented == served
    create = document["paths"]["/api/browser-session"]["post"]
    assert set(create["responses"]) >= {"201", "400", "401", "413", "429"}
    control = document["paths"]["/api/browser-session/{id}/control"]["put"]
    assert set(control["responses"]) >= {"200", "400", "404", "409"}


async def test_console_and_viewer_assets_are_served(stack: Stack) -> None:
    async with stack.http.get(f"{stack.url}/") as response:
        assert response.status == 200
        page = await response.text()
    assert "TakeOverPanel" in page and "BrowserViewPanel" in page
    # What the console is built on: the @baton/client bundle (noVNC inside).
    for asset in ("/console/console.js", "/assets/clients/baton.js"):
        async with stack.http.get(f"{stack.url}{asset}") as response:
            assert response.status == 200, asset
    # The raw noVNC the console once imported is no longer served beside it.
    async with stack.http.get(f"{stack.url}/vendor/novnc/core/rfb.js") as response:
        assert response.status == 404


async def test_end_through_the_control_endpoint(stack: Stack) -> None:
    session = await stack.create_session(ALICE)
    status, ended = await call(
        stack, "PUT", f"/api/browser-session/{session['id']}/control", json={"action": "end"}
    )
    assert (status, ended["state"]) == (200, "ENDED")
    assert stack.display.slots == {}


async def test_stream_urls_follow_the_public_url() -> None:
    async with running_stack(public_url="https://baton.example") as stack:
        session = await stack.create_session(ALICE)
        url = await stack.stream_url(ALICE, session["id"])
    assert url.startswith(f"wss://baton.example/api/browser-session/{session['id']}/stream/ws?")
