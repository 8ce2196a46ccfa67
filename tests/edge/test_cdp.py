"""An external agent over CDP through the edge (issue 13, part 1), all real:
Playwright's connect_over_cdp on the URL the edge hands out, the four services,
Xvnc and Chromium. The agent's input waits while a person has control and
reaches the page after; the person's goes through the stream meanwhile."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import async_playwright
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from services.automation.cdp_gate import PERSON_HAS_CONTROL
from services.display.settings import NumberRange
from tests.conftest import require_binary
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.harness import user_token
from tests.edge.test_full_stack import raw_viewer, stream_url

pytestmark = pytest.mark.asyncio(loop_scope="module")

DISPLAYS = NumberRange(2200, 2205)
VNC_PORTS = NumberRange(22200, 22205)
ALICE = user_token("alice")
BOB = user_token("bob")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FullStack]:
    async with full_stack(tmp_path_factory.mktemp("cdp"), DISPLAYS, VNC_PORTS) as running:
        yield running


async def external_session(stack: FullStack) -> dict[str, Any]:
    stack.site.clear()
    body = {"agent": "external", "url": stack.site.form_url}
    session: dict[str, Any] = await stack.request("POST", "/api/browser-session", ALICE, body)
    return session


async def cdp_url(stack: FullStack, token: str, session_id: str) -> str:
    answer = await stack.request("GET", f"/api/browser-session/{session_id}/cdp", token)
    assert answer["expiresAt"].endswith("Z")
    url: str = answer["url"]
    return url


async def control(stack: FullStack, session_id: str, action: str) -> dict[str, Any]:
    path = f"/api/browser-session/{session_id}/control"
    changed: dict[str, Any] = await stack.request("PUT", path, ALICE, {"action": action})
    return changed


async def test_playwright_drives_the_session_and_waits_while_a_person_has_control(
    stack: FullStack,
) -> None:
    session = await external_session(stack)
    session_id = session["id"]
    # The built-in agent does not act: the URL is open, the session is the AI's.
    assert session["state"] == "AI_CONTROL", session
    async with async_playwright() as playwright:
        browser = await playwright.chromium.connect_over_cdp(
            await cdp_url(stack, ALICE, session_id)
        )
        # The page the live view shows is the agent's.
        [page] = browser.contexts[0].pages
        assert page.url == stack.site.form_url
        await page.click("#word")
        await page.keyboard.type("a")
        await stack.site.wait_until(lambda: stack.site.keys() == "a")

        taken = await control(stack, session_id, "take_control")
        assert taken["state"] == "USER_CONTROL"
        held_before = await stack.metric("baton_cdp_commands_held_total")
        typing = asyncio.ensure_future(page.keyboard.type("b"))
        # The person types through the stream meanwhile: it reaches the page.
        session = await stack.request("GET", f"/api/browser-session/{session_id}", ALICE)
        width, height = session["viewport"]["width"], session["viewport"]["height"]
        async with raw_viewer(await stream_url(stack, ALICE, session_id)) as person:
            await person.click(width // 2, height // 3)
            await person.type("p")
            await person.sync()
        await asyncio.wait_for(stack.site.wait_until(lambda: stack.site.keys().count("p") == 1), 10)
        await asyncio.sleep(0.5)
        assert stack.site.keys() == "ap" and not typing.done()
        assert await stack.metric("baton_cdp_commands_held_total") > held_before

        returned = await control(stack, session_id, "return_control")
        assert returned["state"] == "AI_CONTROL"
        await asyncio.wait_for(typing, 10)
        await asyncio.wait_for(stack.site.wait_until(lambda: stack.site.keys() == "apb"), 10)
        assert await stack.metric("baton_cdp_held_seconds_total") >= 0.5
        await browser.close()

    # Disconnecting leaves the session and its browser to the next client.
    session = await stack.request("GET", f"/api/browser-session/{session_id}", ALICE)
    assert (session["state"], session["task"]["status"]) == ("AI_CONTROL", "RUNNING")
    await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)


async def test_reject_mode_answers_at_once_that_a_person_has_control(stack: FullStack) -> None:
    session_id = (await external_session(stack))["id"]
    url = await cdp_url(stack, ALICE, session_id) + "&onUserControl=reject"
    async with connect(url, max_size=None) as agent:

        async def call(command_id: int, method: str, **params: Any) -> dict[str, Any]:
            await agent.send(json.dumps({"id": command_id, "method": method, "params": params}))
            while True:
                message: dict[str, Any] = json.loads(await asyncio.wait_for(agent.recv(), 10))
                if message.get("id") == command_id:
                    return message

        assert (await call(1, "Browser.getVersion"))["result"]["product"].startswith("Chrome/")
        await control(stack, session_id, "take_control")
        refused = await call(2, "Target.createTarget", url="about:blank")
        assert refused["error"]["message"] == PERSON_HAS_CONTROL
        # Reads still pass (the path is live).
        assert "targetInfos" in (await call(3, "Target.getTargets"))["result"]
        await control(stack, session_id, "return_control")
        assert "targetId" in (await call(4, "Target.createTarget", url="about:blank"))["result"]
    await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)


async def test_a_token_opens_only_its_own_session_and_only_for_its_owner(
    stack: FullStack,
) -> None:
    first = (await external_session(stack))["id"]
    second = (await external_session(stack))["id"]
    url = await cdp_url(stack, ALICE, first)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url.replace(first, second)):
            pass
    assert refused.value.response.status_code == 403
    # A stream token is not a CDP token.
    stream = await stream_url(stack, ALICE, first)
    with pytest.raises(InvalidStatus):
        async with connect(stream.replace("/stream/ws", "/cdp/ws")):
            pass
    # Another user is told the session does not exist, as on every route.
    async with stack.http.get(
        f"{stack.url}/api/browser-session/{first}/cdp", headers={"Authorization": f"Bearer {BOB}"}
    ) as reply:
        assert reply.status == 404
    # Positive marker: the token itself opens its session (once).
    async with connect(url) as agent:
        await agent.send(json.dumps({"id": 1, "method": "Browser.getVersion", "params": {}}))
        assert json.loads(await asyncio.wait_for(agent.recv(), 10))["id"] == 1
    with pytest.raises(InvalidStatus):
        async with connect(url):
            pass
    for session_id in (first, second):
        await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)


async def test_the_connection_ends_with_the_credential_it_was_asked_with(
    stack: FullStack,
) -> None:
    short = user_token("alice", lifetime_s=4)
    session_id = (await external_session(stack))["id"]
    async with connect(await cdp_url(stack, short, session_id)) as agent:
        await agent.send(json.dumps({"id": 1, "method": "Browser.getVersion", "params": {}}))
        assert json.loads(await asyncio.wait_for(agent.recv(), 10))["id"] == 1
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(agent.recv(), 15)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "token expired")
    await stack.request("DELETE", f"/api/browser-session/{session_id}", ALICE)


PUPPETEER = Path(__file__).with_name("puppeteer")


async def test_puppeteer_attaches_to_the_session_s_browser_and_acts(stack: FullStack) -> None:
    """Puppeteer's connect({browserWSEndpoint}) on the edge's CDP URL finds the
    page the live view shows and types into it (tests/edge/puppeteer/agent.mjs);
    while a person has control its typing waits, and goes on once control returns."""
    assert (PUPPETEER / "node_modules" / "puppeteer-core").is_dir(), "make setup installs it"
    session = await external_session(stack)
    url = await cdp_url(stack, ALICE, session["id"])
    await control(stack, session["id"], "take_control")
    held_before = await stack.metric("baton_cdp_commands_held_total")
    agent = await asyncio.create_subprocess_exec(
        require_binary("node", "nodejs"),
        str(PUPPETEER / "agent.mjs"),
        url,
        stack.site.form_url,
        "puppet",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    finished = asyncio.ensure_future(agent.communicate())
    # Puppeteer attached and its first page-changing command is held (the
    # positive marker), and nothing it typed has reached the page.
    while await stack.metric("baton_cdp_commands_held_total") == held_before:
        assert not finished.done(), "the agent ended while a person had control"
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)
    assert stack.site.keys() == "" and not finished.done()
    await control(stack, session["id"], "return_control")
    out, err = await asyncio.wait_for(finished, 60)
    assert agent.returncode == 0, err.decode()
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert seen["url"] == stack.site.form_url and "Chrome" in seen["version"]
    await stack.site.wait_until(stack.site.finished)
    assert stack.site.keys() == "puppet"
    # It disconnected; the session and its browser stay.
    after = await stack.request("GET", f"/api/browser-session/{session['id']}", ALICE)
    assert after["state"] == "AI_CONTROL"
    await stack.request("DELETE", f"/api/browser-session/{session['id']}", ALICE)
