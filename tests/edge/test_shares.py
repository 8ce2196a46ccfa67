"""Sharing a session with someone without an account (README, "Sharing"), end to
end: real Xvnc, websockify, Chromium and all four services under the edge
(tests/edge/full_stack.py); the share's page opened in a real Chromium."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import socketio
from playwright.async_api import expect
from websockets.exceptions import ConnectionClosed

from services.display.rfb_client import RfbError
from services.display.settings import NumberRange
from tests.edge.full_stack import COLOUR_RGB, FullStack, full_stack
from tests.edge.harness import bearer, user_token
from tests.edge.test_console_details import start
from tests.edge.test_embed import wait_for_page_colour, waiting_session
from tests.edge.test_full_stack import console_page, raw_viewer

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALICE = user_token("alice")
BOB = user_token("bob")
# This file's own displays and VNC ports (apart from every other test's).
DISPLAYS = NumberRange(2900, 2904)
VNC_PORTS = NumberRange(22900, 22904)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FullStack]:
    async with full_stack(tmp_path_factory.mktemp("shares-e2e"), DISPLAYS, VNC_PORTS) as running:
        yield running


async def call(
    stack: FullStack, method: str, path: str, token: str, body: Any = None
) -> tuple[int, Any]:
    """The status and JSON answer (None when empty) of one REST call."""
    async with stack.http.request(
        method, f"{stack.url}{path}", json=body, headers=bearer(token)
    ) as response:
        text = await response.text()
        return response.status, (await response.json()) if text else None


async def share(stack: FullStack, session_id: str, role: str, **extra: Any) -> dict[str, Any]:
    status, answer = await call(
        stack,
        "POST",
        f"/api/browser-session/{session_id}/shares",
        ALICE,
        {"role": role, **extra},
    )
    assert status == 201, answer
    assert answer["role"] == role and answer["createdBy"] == "alice"
    return dict(answer)


async def test_a_view_share_opens_its_one_session_to_watch(stack: FullStack) -> None:
    session_id = await waiting_session(
        stack, stack.site.colour_url, [{"action": "request_user", "reason": "look"}]
    )
    other_id = await waiting_session(
        stack, stack.site.colour_url, [{"action": "request_user", "reason": "look"}]
    )
    view = await share(stack, session_id, "view", ttlSeconds=600, label="support")
    token = view["token"]
    assert view["url"] == f"{stack.url}/embed/{session_id}#token={token}"
    base = f"/api/browser-session/{session_id}"

    status, session = await call(stack, "GET", base, token)
    assert status == 200 and session["id"] == session_id
    status, stream = await call(stack, "GET", f"{base}/stream", token)
    assert status == 200 and stream["viewOnly"] is True
    status, refused = await call(stack, "PUT", f"{base}/control", token, {"action": "take_control"})
    assert status == 403, refused
    assert "view share" in refused["error"]["message"]
    # Nothing but its session's view: every other door is shut.
    for method, path, body in [
        ("DELETE", base, None),
        ("PUT", f"{base}/control", {"action": "pause"}),
        ("GET", f"{base}/cdp", None),
        ("POST", f"{base}/shares", {"role": "control"}),
        ("GET", f"{base}/shares", None),
        ("GET", "/api/browser-session", None),
        ("POST", "/api/browser-session", {"task": "t", "url": stack.site.colour_url}),
    ]:
        status, answer = await call(stack, method, path, token, body)
        assert status == 403, (method, path, answer)
    status, _ = await call(stack, "GET", f"/api/browser-session/{other_id}", token)
    assert status == 404
    # Another user does not see the session's shares; its owner does, without tokens.
    status, _ = await call(stack, "GET", f"{base}/shares", BOB)
    assert status == 404
    status, listed = await call(stack, "GET", f"{base}/shares", ALICE)
    assert status == 200 and [s["id"] for s in listed["shares"]] == [view["id"]]
    assert "token" not in listed["shares"][0]

    async with console_page(stack) as page:
        await page.goto(view["url"])
        await expect(page.locator("#view-status")).to_have_text("connected")
        await wait_for_page_colour(page.main_frame, COLOUR_RGB)
        await expect(page.locator("#take-button")).to_be_hidden()
    for sid in (session_id, other_id):
        await stack.request("DELETE", f"/api/browser-session/{sid}", ALICE)


async def test_a_control_share_lets_a_guest_take_control_and_type(stack: FullStack) -> None:
    session_id = await waiting_session(
        stack,
        stack.site.form_url,
        [{"action": "request_user", "reason": "type"}, {"action": "click", "selector": "#finish"}],
    )
    control = await share(stack, session_id, "control", label="Dana")
    guest = f"guest:{control['id']}"
    assert control["url"].startswith(f"{stack.url}/embed/{session_id}?control=1#token=")
    async with console_page(stack) as page:
        await page.goto(control["url"])
        await expect(page.locator("#view-status")).to_have_text("connected")
        await page.locator("#take-button").click()
        await expect(page.locator("#controller-indicator")).to_have_text("You")
        taken = await stack.request("GET", f"/api/browser-session/{session_id}", ALICE)
        assert (taken["state"], taken["controllerUserId"]) == ("USER_CONTROL", guest)
        await page.locator("#screen canvas").click()
        await page.keyboard.type("guest")
        await stack.site.wait_until(lambda: len(stack.site.keys()) >= 5)
        assert stack.site.keys() == "guest"
        await page.locator("#return-button").click()
        await expect(page.locator("#controller-indicator")).to_have_text("AI")
        await stack.site.wait_until(stack.site.finished)
    await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)


async def test_revoking_a_share_closes_what_it_opened_within_a_second(stack: FullStack) -> None:
    session_id = await waiting_session(
        stack, stack.site.colour_url, [{"action": "request_user", "reason": "look"}]
    )
    view = await share(stack, session_id, "view")
    token = view["token"]
    base = f"/api/browser-session/{session_id}"
    _, stream = await call(stack, "GET", f"{base}/stream", token)
    watcher = socketio.AsyncClient(reconnection=False)
    told: list[Any] = []
    disconnected = asyncio.Event()
    watcher.on("auth:expired", told.append)
    watcher.on("disconnect", lambda *_: disconnected.set())
    await watcher.connect(stack.url, auth={"token": token}, transports=["websocket"])
    try:
        # Positive markers: both connections are live and serve the session.
        ack = await watcher.call("session:watch", {"id": session_id}, timeout=30)
        assert ack["ok"] and ack["session"]["id"] == session_id
        async with raw_viewer(stream["url"]) as viewer:
            await viewer.sync()
            revoked_at = time.monotonic()
            status, _ = await call(stack, "DELETE", f"{base}/shares/{view['id']}", ALICE)
            assert status == 204
            with pytest.raises(RfbError) as failed:
                while True:
                    await asyncio.wait_for(viewer.sync(), 5)
            stream_closed = time.monotonic() - revoked_at
            await asyncio.wait_for(disconnected.wait(), 5)
            socket_closed = time.monotonic() - revoked_at
        closed = failed.value.__cause__
        assert isinstance(closed, ConnectionClosed) and closed.rcvd is not None
        assert (closed.rcvd.code, closed.rcvd.reason) == (1008, "the share was revoked")
        assert stream_closed < 1.0 and socket_closed < 1.0, (stream_closed, socket_closed)
        assert told and "revoked" in told[0]["error"]["message"]
    finally:
        await watcher.disconnect()
    status, answer = await call(stack, "GET", base, token)
    assert status == 401 and "revoked" in answer["error"]["message"]
    status, answer = await call(stack, "GET", f"{base}/stream", token)
    assert status == 401
    status, answer = await call(stack, "DELETE", f"{base}/shares/{view['id']}", ALICE)
    assert status == 404
    await stack.request("DELETE", base, ALICE)


async def test_a_share_ends_when_it_expires_or_its_session_ends(stack: FullStack) -> None:
    session_id = await waiting_session(
        stack, stack.site.colour_url, [{"action": "request_user", "reason": "look"}]
    )
    base = f"/api/browser-session/{session_id}"
    short = await share(stack, session_id, "view", ttlSeconds=1.5)
    lasting = await share(stack, session_id, "view")
    await asyncio.sleep(2)
    status, answer = await call(stack, "GET", base, short["token"])
    assert status == 401 and "expired" in answer["error"]["message"]
    # Positive marker: a share that has not expired still opens the session.
    status, _ = await call(stack, "GET", base, lasting["token"])
    assert status == 200
    await stack.request("DELETE", base, ALICE)
    status, _ = await call(stack, "GET", base, lasting["token"])
    assert status == 401
    for body in ({"role": "edit"}, {"role": "view", "ttlSeconds": 0}, {"role": "view", "x": 1}):
        status, answer = await call(stack, "POST", f"{base}/shares", ALICE, body)
        assert status == 400, answer


async def test_a_guest_asks_for_control_and_the_person_holding_it_hands_it_over(
    stack: FullStack,
) -> None:
    """alice holds control in the console; a control share's guest asks for it
    from the share's page, alice hands it over with one click, the guest types."""
    steps: list[dict[str, object]] = [
        {"action": "request_user", "reason": "type"},
        {"action": "click", "selector": "#finish"},
    ]
    async with console_page(stack) as console:
        await start(console, stack, steps)
        await expect(console.locator("#user-request")).to_contain_text("type")
        session_id = console.url.split("#session=", 1)[1]
        await console.locator("#take-button").click()
        await expect(console.locator("#controller-indicator")).to_have_text("You")
        control = await share(stack, session_id, "control", label="Dana")
        guest = f"guest:{control['id']}"

        browser = console.context.browser
        assert browser is not None
        # A page of its own context: the guest shares nothing with alice's page.
        shared = await browser.new_page(viewport={"width": 1280, "height": 900})
        await shared.goto(control["url"])
        await expect(shared.locator("#view-status")).to_have_text("connected")
        await expect(shared.locator("#controller-indicator")).to_have_text("alice")
        await shared.locator("#ask-button").click()
        await expect(console.locator("#control-request-text")).to_have_text(
            f"{guest} asks for control."
        )
        await console.locator("#hand-over-button").click()
        await expect(shared.locator("#controller-indicator")).to_have_text("You")
        await expect(console.locator("#controller-indicator")).to_have_text(guest)
        await expect(console.locator("#control-request")).to_be_hidden()
        await shared.locator("#screen canvas").click()
        await shared.keyboard.type("dana")
        await stack.site.wait_until(lambda: len(stack.site.keys()) >= 4)
        assert stack.site.keys() == "dana"
        await shared.locator("#return-button").click()
        await stack.site.wait_until(stack.site.finished)
    await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)
