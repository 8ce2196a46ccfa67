"""The hand-back report end to end (issue 15, part 2): real Xvnc, websockify,
Chromium and all four services. A person takes control, types a marker into a
labelled field and follows a link through the live view (RFB input through the
edge's stream), then returns control: the agent learns the field, both URLs,
the cookie and storage item the page set, and never the typed text."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import socketio
from websockets.asyncio.client import connect

from services.display.settings import NumberRange
from services.edge.rfb_filter import key_event
from services.runtime.handback_view import CONTROL_RETURNED_METHOD
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.harness import user_token
from tests.edge.test_full_stack import RawViewer, raw_viewer, stream_url

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALICE = user_token("alice")
DISPLAYS = NumberRange(2800, 2809)
VNC_PORTS = NumberRange(22800, 22809)
MARKER = "zqxmarker"
TAB, RETURN = 0xFF09, 0xFF0D


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FullStack]:
    async with full_stack(tmp_path_factory.mktemp("handback"), DISPLAYS, VNC_PORTS) as running:
        yield running


async def control(stack: FullStack, session_id: str, action: str) -> dict[str, Any]:
    path = f"/api/browser-session/{session_id}/control"
    changed: dict[str, Any] = await stack.request("PUT", path, ALICE, {"action": action})
    return changed


async def press(viewer: RawViewer, keysym: int) -> None:
    await viewer.channel.send(key_event(keysym, True) + key_event(keysym, False))


async def type_and_follow_the_link(stack: FullStack, session: dict[str, Any]) -> None:
    """Through the live view: focus the field, type the marker, Tab to the link, Enter."""
    centre = (session["viewport"]["width"] // 2, session["viewport"]["height"] // 2)
    async with raw_viewer(await stream_url(stack, ALICE, session["id"])) as alice:
        await alice.click(*centre)
        await alice.type(MARKER)
        await press(alice, TAB)
        await press(alice, RETURN)
        await alice.sync()
        await stack.site.wait_until(lambda: any(r["kind"] == "arrived" for r in stack.site.reports))


def check_report(handback: dict[str, Any], before: str, after: str) -> None:
    assert (handback["urlBefore"], handback["urlAfter"]) == (before, after)
    assert handback["titleBefore"] == "Hand-back form"
    assert handback["titleAfter"] == "Next page"
    assert after in handback["navigations"]
    # The field, by its label and a selector: the positive marker of the search below.
    assert {"label": "Favourite word", "selector": "#favourite", "url": before} in handback[
        "fieldsTyped"
    ]
    assert {"name": "draft", "domain": "127.0.0.1", "change": "added", "area": ""} in handback[
        "cookiesChanged"
    ]
    assert handback["heldSeconds"] > 0


async def test_the_agent_learns_what_the_person_did_and_never_what_they_typed(
    stack: FullStack,
) -> None:
    stack.site.clear()
    created = await stack.request(
        "POST",
        "/api/browser-session",
        ALICE,
        {
            "task": "a person fills in the form",
            "url": stack.site.handback_url,
            "steps": [{"action": "request_user", "reason": "type your favourite word"}],
        },
    )
    session_id = created["id"]
    session = await stack.wait_for_session(
        ALICE, session_id, lambda s: s["task"]["status"] == "WAITING_FOR_USER"
    )
    before, after = stack.site.handback_url, f"{stack.site.url}/handback-next"
    events: list[dict[str, Any]] = []
    watcher = socketio.AsyncClient(reconnection=False)
    watcher.on("session:control_changed", events.append)
    await watcher.connect(stack.url, auth={"token": ALICE}, transports=["websocket"])
    try:
        assert (await watcher.call("session:watch", {"id": session_id}))["ok"] is True
        taken = await control(stack, session_id, "take_control")
        assert taken["state"] == "USER_CONTROL"
        await type_and_follow_the_link(stack, session)
        returned = await control(stack, session_id, "return_control")
        check_report(returned["handback"], before, after)
        assert returned["handback"]["reason"] == "return_control"
        assert returned["handback"]["returnedBy"] == "alice"
        done = await stack.wait_for_session(
            ALICE, session_id, lambda s: s["task"]["status"] == "COMPLETED"
        )
        for _ in range(100):
            if any(e["action"] == "return_control" for e in events):
                break
            await asyncio.sleep(0.05)
    finally:
        await watcher.disconnect()
    # On the session (REST GET), in the Socket.IO event, in the step stream.
    check_report(done["handback"], before, after)
    event = next(e for e in events if e["action"] == "return_control")
    check_report(event["handback"], before, after)
    steps = [s for s in done["steps"] if s["action"] == "handback"]
    assert len(steps) == 1
    assert steps[0]["handback"] == done["handback"]
    # The report is no step of the task: opening the URL and request_user are.
    assert done["task"]["stepsCompleted"] == 2
    assert "Favourite word" in steps[0]["description"]
    # The storage item the page set as the person typed: named, not shown.
    storage = done["handback"]["storageChanged"]
    assert {"name": "draft-saved", "domain": stack.site.url, "change": "added"}.items() <= (
        storage[0].items()
    )
    everything = json.dumps([returned, done, events])
    assert "Favourite word" in everything
    assert MARKER not in everything
    await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)


async def test_an_external_agent_hears_the_report_over_cdp(stack: FullStack) -> None:
    stack.site.clear()
    body = {"agent": "external", "url": stack.site.handback_url}
    created = await stack.request("POST", "/api/browser-session", ALICE, body)
    session_id = created["id"]
    session = await stack.wait_for_session(
        ALICE, session_id, lambda s: s["state"] == "AI_CONTROL" and "viewport" in s
    )
    url = (await stack.request("GET", f"/api/browser-session/{session_id}/cdp", ALICE))["url"]
    async with connect(url, max_size=None) as agent:
        await agent.send(json.dumps({"id": 1, "method": "Browser.getVersion"}))
        assert json.loads(await asyncio.wait_for(agent.recv(), 10))["id"] == 1
        await control(stack, session_id, "take_control")
        await type_and_follow_the_link(stack, session)
        await control(stack, session_id, "return_control")
        while True:
            message = json.loads(await asyncio.wait_for(agent.recv(), 10))
            if message.get("method") == CONTROL_RETURNED_METHOD:
                break
    handback = message["params"]["handback"]
    check_report(handback, stack.site.handback_url, f"{stack.site.url}/handback-next")
    assert MARKER not in json.dumps(message)
    await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)
