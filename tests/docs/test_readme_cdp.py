"""The README's "Your own agent over CDP" block, run as written against `make run`."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from baton.automation.v1 import automation_pb2, automation_pb2_grpc
from services.runtime.grpc_client import open_channel
from services.runtime.internal_auth import InternalToken
from tests.deploy.stack_process import TOKEN, LauncherStack
from tests.docs.conftest import INTERNAL_TOKEN

README = Path(__file__).resolve().parents[2] / "README.md"
# The field's value becomes the page's title, for the test to read.
PAGE = b"<!doctype html><title>empty</title><input oninput='document.title = this.value'>"


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def page_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/form"
    finally:
        server.shutdown()
        server.server_close()


def readme_block() -> str:
    text = README.read_text()
    section = text[text.index("## Your own agent over CDP") :]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match is not None, "the section has its python block"
    return match.group(1)


async def titles(stack: LauncherStack) -> list[str]:
    address = f"127.0.0.1:{stack.env['BATON_AUTOMATION_PORT']}"
    async with open_channel(address, InternalToken(INTERNAL_TOKEN)) as channel:
        stub = automation_pb2_grpc.AutomationServiceStub(channel)
        browsers = await stub.ListBrowsers(automation_pb2.ListBrowsersRequest())
        found = []
        for session_id in browsers.session_ids:
            state = await stub.GetPageState(
                automation_pb2.GetPageStateRequest(session_id=session_id)
            )
            found.append(state.title)
        return found


@pytest.mark.asyncio
async def test_the_readme_s_cdp_example_drives_the_session_s_browser(
    stack: LauncherStack, page_url: str
) -> None:
    namespace: dict[str, object] = {}
    exec(compile(readme_block(), str(README), "exec"), namespace)
    main = namespace["main"]
    assert callable(main)
    await main(f"http://127.0.0.1:{stack.edge_port}", TOKEN, page_url)
    # The agent's text reached the page of the session's own browser.
    assert "typed by my agent" in await titles(stack)
    for session in stack.request("GET", "/api/browser-session")["sessions"]:
        if session["state"] not in ("ENDED", "FAILED"):
            stack.request("DELETE", f"/api/browser-session/{session['id']}")
