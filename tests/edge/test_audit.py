"""End to end: the audit trail (README "Audit trail") with every real part.

Control taken and returned through REST, a share made and revoked, a stream
connection that types while holding control, and a CDP connection: GET
/api/audit lists each with the acting user, the client address and the time,
the stream's close with its input count and never what was typed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from websockets.asyncio.client import connect

from services.display.settings import NumberRange
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.harness import OPERATOR_TOKEN, user_token
from tests.edge.test_full_stack import ALICE, raw_viewer, start_form_task, stream_url

pytestmark = pytest.mark.asyncio(loop_scope="module")

# This test file's own displays and VNC ports.
DISPLAYS = NumberRange(3000, 3009)
VNC_PORTS = NumberRange(23000, 23009)
# Typed through the stream while alice holds control; must appear nowhere in the audit.
TYPED = "qjxv"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FullStack]:
    async with full_stack(tmp_path_factory.mktemp("audit"), DISPLAYS, VNC_PORTS) as running:
        yield running


async def get_audit(stack: FullStack, token: str, query: str = "") -> tuple[int, str, str]:
    """Status, content type and body of GET /api/audit?<query>."""
    async with stack.http.get(
        f"{stack.url}/api/audit{'?' + query if query else ''}",
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        return response.status, response.content_type, await response.text()


def events_of(body: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines()]


async def audit_events(stack: FullStack, query: str) -> list[dict[str, Any]]:
    status, content_type, body = await get_audit(stack, OPERATOR_TOKEN, query)
    assert (status, content_type) == (200, "application/x-ndjson"), body
    return events_of(body)


async def wait_for_kind(stack: FullStack, session_id: str, kind: str) -> list[dict[str, Any]]:
    """The session's events once one of `kind` is among them (edges report closes
    after the connection closed)."""
    while True:
        events = await audit_events(stack, f"sessionId={session_id}")
        if any(e["kind"] == kind for e in events):
            return events
        await asyncio.sleep(0.1)


async def test_the_audit_trail_names_who_did_what_from_where_and_when(stack: FullStack) -> None:
    started = datetime.now(UTC)
    session = await start_form_task(stack)
    session_id = session["id"]
    control = f"/api/browser-session/{session_id}/control"
    async with raw_viewer(await stream_url(stack, ALICE, session_id)) as alice:
        await stack.request("PUT", control, ALICE, {"action": "take_control"})
        width, height = session["viewport"]["width"], session["viewport"]["height"]
        await alice.click(width // 2, height // 2)
        await alice.type(TYPED)
        await alice.sync()
        await stack.site.wait_until(lambda: len(stack.site.keys()) >= len(TYPED))
        assert stack.site.keys() == TYPED
    await wait_for_kind(stack, session_id, "stream_closed")
    await stack.request("PUT", control, ALICE, {"action": "return_control"})

    share = await stack.request(
        "POST", f"/api/browser-session/{session_id}/shares", ALICE, {"role": "view"}
    )
    await stack.request("DELETE", f"/api/browser-session/{session_id}/shares/{share['id']}", ALICE)

    cdp = await stack.request("GET", f"/api/browser-session/{session_id}/cdp", ALICE)
    async with connect(cdp["url"], max_size=None) as agent:
        await agent.send(json.dumps({"id": 1, "method": "Browser.getVersion", "params": {}}))
        assert json.loads(await agent.recv())["id"] == 1
    events = await wait_for_kind(stack, session_id, "cdp_closed")
    finished = datetime.now(UTC)

    got = [(e["kind"], e["userId"], e["detail"].get("action")) for e in events]
    assert got == [
        ("stream_opened", "alice", None),
        ("control_changed", "alice", "take_control"),
        ("stream_closed", "alice", None),
        ("control_changed", "alice", "return_control"),
        ("share_created", "alice", None),
        ("share_revoked", "alice", None),
        ("cdp_opened", "alice", None),
        ("cdp_closed", "alice", None),
    ]
    for event in events:
        assert event["sessionId"] == session_id
        assert event["sourceAddress"] == "127.0.0.1"
        assert started <= datetime.fromisoformat(event["at"]) <= finished
    by_kind = {e["kind"]: e for e in events}
    # The input is that connection's: counted (the positive marker), never its keys.
    # (three pointer events and a press and release per key)
    assert by_kind["stream_closed"]["detail"]["inputForwarded"] == 3 + 2 * len(TYPED)
    assert by_kind["share_created"]["detail"]["shareId"] == share["id"]
    assert by_kind["share_created"]["detail"]["role"] == "view"
    assert by_kind["cdp_closed"]["detail"]["commands"] == 1
    _, _, everything = await get_audit(stack, OPERATOR_TOKEN)
    assert TYPED not in everything
    assert share["token"] not in everything and cdp["url"].split("token=")[1] not in everything

    # `since` leaves out what came before it.
    since = by_kind["share_created"]["at"]
    later = await audit_events(stack, f"sessionId={session_id}&since={since}")
    assert [e["kind"] for e in later] == [
        "share_created",
        "share_revoked",
        "cdp_opened",
        "cdp_closed",
    ]
    assert len(await audit_events(stack, f"sessionId={session_id}&limit=2")) == 2


async def test_the_audit_trail_is_for_operators_only(stack: FullStack) -> None:
    status, _, body = await get_audit(stack, user_token("alice"))
    assert status == 403 and "operators" in body
    status, _, body = await get_audit(stack, OPERATOR_TOKEN, "since=yesterday")
    assert status == 400 and "ISO 8601" in body
    status, _, body = await get_audit(stack, OPERATOR_TOKEN, "limit=0")
    assert status == 400 and "limit" in body
