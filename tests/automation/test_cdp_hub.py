"""External CDP clients share a browser's pipe with Playwright (cdp_hub.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from services.automation.browser_user import BrowserUsers
from services.automation.cdp_hub import NO_SESSION, CdpClient
from services.automation.chromium import ChromiumBrowser, PlaywrightDriver

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module")
async def browser(tmp_path: Path, display: str) -> AsyncIterator[ChromiumBrowser]:
    driver = PlaywrightDriver(
        "/usr/bin/chromium", tmp_path, dict(os.environ), BrowserUsers.for_this_process(300000)
    )
    await driver.start()
    try:
        yield await driver.launch("cdp-hub", display, 800, 600)
    finally:
        await driver.stop()


async def call(client: CdpClient, command_id: int, method: str, **params: Any) -> dict[str, Any]:
    session = params.pop("session", None)
    message: dict[str, Any] = {"id": command_id, "method": method, "params": params}
    if session is not None:
        message["sessionId"] = session
    answer = await client.send(message)
    assert answer["id"] == command_id
    return answer


async def test_an_external_client_drives_the_page_playwright_drives(
    browser: ChromiumBrowser,
) -> None:
    assert browser.cdp is not None
    client = await browser.cdp.attach()
    targets = await call(client, 1, "Target.getTargets")
    [page] = [t for t in targets["result"]["targetInfos"] if t["type"] == "page"]
    attached = await call(
        client, 2, "Target.attachToTarget", targetId=page["targetId"], flatten=True
    )
    session = attached["result"]["sessionId"]
    evaluated = await call(
        client, 3, "Runtime.evaluate", expression="document.title = 'set over CDP'", session=session
    )
    assert evaluated["result"]["result"]["value"] == "set over CDP"
    # Playwright, on the same pipe, sees what the client did.
    assert (await browser.observe(with_aria=False)).title == "set over CDP"
    # Answers reached the client's inbox too, in order, with its own ids, and
    # its browser session is its root: no sessionId on root answers.
    answers: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    while len(answers) < 3:
        message = await asyncio.wait_for(client.receive(), 10)
        assert message is not None
        (answers if "id" in message else events).append(message)
    assert [m["id"] for m in answers] == [1, 2, 3]
    assert "sessionId" not in answers[0] and answers[2]["sessionId"] == session
    # Attaching told the client's own root session (so: no sessionId).
    assert [e["method"] for e in events] == ["Target.attachedToTarget"]
    assert "sessionId" not in events[0]

    # Playwright's own sessions are not the client's to use.
    other = await client.send(
        {"id": 4, "method": "Runtime.evaluate", "params": {}, "sessionId": "not-mine"}
    )
    assert other["error"]["code"] == NO_SESSION
    assert await client.receive() == other

    client.close()
    assert await client.receive() is None
    # Detached, the client's sessions are gone; Playwright goes on.
    assert (await browser.observe(with_aria=False)).title == "set over CDP"
    second = await browser.cdp.attach()
    assert second.root != client.root
    assert (await call(second, 1, "Browser.getVersion"))["result"]["product"].startswith("Chrome/")
    second.close()
