"""The whole product on loopback: display, automation, session and edge.

Every service is the real one, each its own gRPC server (in this process), with
real Xvnc, websockify and Chromium under it. `FormSite` is the web page the
agent works on: it reports every key it sees, in order, to the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import aiohttp
from aiohttp import web

from baton.client import BatonClient
from baton.display.v1 import display_pb2, display_pb2_grpc
from baton.session.v1 import session_pb2, session_pb2_grpc
from services.automation.server import start_automation_server
from services.automation.settings import AutomationSettings, LlmSettings
from services.display.server import start_display_server
from services.display.settings import Backend, DisplaySettings, NumberRange, RecordingBucket
from services.edge.auth import Authenticator
from services.edge.server import RunningEdge, start_edge_server
from services.edge.settings import EdgeSettings
from services.runtime.grpc_client import open_channel
from services.runtime.grpc_server import RunningServer
from services.session.server import start_session_server
from services.session.settings import SessionSettings
from services.session.webhook_delivery import WebhookSettings
from tests.conftest import INTERNAL_TOKEN, require_binary, searchable
from tests.edge.harness import JWT_SECRET, OPERATOR_TOKEN

NO_WEBHOOKS = WebhookSettings()
NO_LLM = LlmSettings()

# Display numbers and VNC ports of their own, apart from the display tests'.
DISPLAYS = NumberRange(300, 309)
VNC_PORTS = NumberRange(17300, 17309)

FORM_PAGE = """<!doctype html>
<html><head><title>Baton test form</title></head>
<body style="font: 28px sans-serif; margin: 2rem">
<h1>Type a word</h1>
<input id="word" style="font-size: 28px" autofocus>
<button id="finish" style="font-size: 28px">Finish</button>
<p id="status">waiting</p>
<script>
let seq = 0;
function report(kind, value) {
  fetch("/log", {method: "POST", keepalive: true,
                 body: JSON.stringify({seq: seq++, kind, value})});
}
document.addEventListener("keydown", (e) => {
  if (e.key.length === 1) report("key", e.key);
});
// A click anywhere on the page puts the caret in the field, so typed keys show.
document.addEventListener("click", (e) => {
  if (e.target.id !== "finish") document.getElementById("word").focus();
});
document.getElementById("finish").addEventListener("click", () => {
  document.getElementById("status").textContent = "finished";
  report("finish", "finished");
});
</script>
</body></html>
"""


# A page of one colour (COLOUR_RGB), to find in the live view's pixels.
COLOUR_RGB = (30, 144, 255)
COLOUR_PAGE = (
    "<!doctype html><html><head><title>Colour</title></head>"
    f"<body style='margin: 0; background: rgb{COLOUR_RGB}'></body></html>"
)


# A sign-up form with an optional password field (issue 13, part 2); the
# answer page shows what was submitted.
SIGNUP_PAGE = """<!doctype html>
<html><head><title>Sign up</title></head><body>
<form method="post" action="/signup">
  <label>Name <input id="name" name="name"></label>
  <label>Email <input id="email" name="email" type="email"></label>
  <label>Password (optional) <input id="password" name="password" type="password"></label>
  <button id="submit" type="submit">Submit</button>
</form></body></html>
"""


# A labelled field and a link (the hand-back report, issue 15): typing sets a
# cookie and a storage item; the next page reports that it was reached.
HANDBACK_PAGE = """<!doctype html>
<html><head><title>Hand-back form</title></head>
<body style="font: 28px sans-serif; margin: 2rem">
<label>Favourite word <input id="favourite" name="favourite" style="font-size: 28px"></label>
<a id="next" href="/handback-next">Next page</a>
<script>
const field = document.getElementById("favourite");
document.addEventListener("click", (e) => { if (e.target.id !== "next") field.focus(); });
field.addEventListener("input", () => {
  document.cookie = "draft=" + encodeURIComponent(field.value) + "; path=/";
  localStorage.setItem("draft-saved", field.value);
});
</script>
</body></html>
"""
HANDBACK_NEXT_PAGE = """<!doctype html><html><head><title>Next page</title></head>
<body><p>Arrived</p><script>
fetch("/log", {method: "POST", body: JSON.stringify({seq: 0, kind: "arrived", value: ""})});
</script></body></html>"""

# Privacy during takeover (issue 15, part 4): a labelled field whose value the
# page echoes in a paragraph (so it shows in the ARIA snapshot and in an
# `extract` twice) and reports to the test as it changes.
PRIVACY_PAGE = """<!doctype html>
<html><head><title>Private note</title></head>
<body style="font: 28px sans-serif; margin: 2rem">
<label>Private note <input id="note" name="note" style="font-size: 28px"></label>
<p id="echo">Noted: nothing</p>
<script>
const note = document.getElementById("note");
document.addEventListener("click", () => note.focus());
note.addEventListener("input", () => {
  document.getElementById("echo").textContent = "Noted: " + note.value;
  fetch("/log", {method: "POST", body: JSON.stringify({seq: 0, kind: "value", value: note.value})});
});
</script>
</body></html>
"""

# Auto-return (issue 15): a click anywhere on the page adds #dashboard, or, on
# the second, goes to the colour page.
CLICK_PAGE = """<!doctype html><html><head><title>Click page</title></head>
<body style="margin: 0"><button id="anywhere"
 style="position: fixed; inset: 0; width: 100%; height: 100%; font-size: 28px">Click</button>
<script>
document.getElementById("anywhere").addEventListener("click", () => {
  if (location.hash === "#go") { location.href = "/colour"; return; }
  document.body.insertAdjacentHTML("beforeend", '<p id="dashboard">Dashboard</p>');
});
</script></body></html>"""


async def _settles(
    read: Callable[[], Awaitable[float]], value: float, what: str, within_s: float
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        seen = await read()
        if seen == value:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{what} is {seen:g}, not {value:g}, after {within_s:g} s")
        await asyncio.sleep(0.05)


@dataclass
class FormSite:
    """The page the agent works on, and what it reported."""

    url: str = ""
    reports: list[dict[str, Any]] = field(default_factory=list)
    signups: list[dict[str, str]] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def form_url(self) -> str:
        return f"{self.url}/form"

    @property
    def signup_url(self) -> str:
        return f"{self.url}/signup"

    @property
    def handback_url(self) -> str:
        return f"{self.url}/handback"

    @property
    def privacy_url(self) -> str:
        return f"{self.url}/privacy"

    @property
    def colour_url(self) -> str:
        return f"{self.url}/colour"

    @property
    def click_url(self) -> str:
        """A click anywhere adds #dashboard; with #go in the URL, goes to /colour."""
        return f"{self.url}/click"

    def keys(self) -> str:
        ordered = sorted(self.reports, key=lambda report: int(report["seq"]))
        return "".join(str(r["value"]) for r in ordered if r["kind"] == "key")

    def finished(self) -> bool:
        return any(report["kind"] == "finish" for report in self.reports)

    def clear(self) -> None:
        self.reports.clear()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(predicate)

    async def _form(self, request: web.Request) -> web.Response:
        return web.Response(text=FORM_PAGE, content_type="text/html")

    async def _click(self, request: web.Request) -> web.Response:
        return web.Response(text=CLICK_PAGE, content_type="text/html")

    async def _signup(self, request: web.Request) -> web.Response:
        return web.Response(text=SIGNUP_PAGE, content_type="text/html")

    async def _signed_up(self, request: web.Request) -> web.Response:
        form = await request.post()
        submitted = {key: str(value) for key, value in form.items()}
        async with self._changed:
            self.signups.append(submitted)
            self._changed.notify_all()
        shown = html.escape(f"Signed up: {submitted.get('name')} <{submitted.get('email')}>")
        page = f"<!doctype html><title>{shown}</title><p id='result'>{shown}</p>"
        return web.Response(text=page, content_type="text/html")

    async def _handback(self, request: web.Request) -> web.Response:
        return web.Response(text=HANDBACK_PAGE, content_type="text/html")

    async def _handback_next(self, request: web.Request) -> web.Response:
        return web.Response(text=HANDBACK_NEXT_PAGE, content_type="text/html")

    async def _privacy(self, request: web.Request) -> web.Response:
        return web.Response(text=PRIVACY_PAGE, content_type="text/html")

    async def _colour(self, request: web.Request) -> web.Response:
        return web.Response(text=COLOUR_PAGE, content_type="text/html")

    async def _log(self, request: web.Request) -> web.Response:
        report = json.loads(await request.text())
        async with self._changed:
            self.reports.append(report)
            self._changed.notify_all()
        return web.Response(status=204)


@contextlib.asynccontextmanager
async def form_site(host: str = "127.0.0.1") -> AsyncIterator[FormSite]:
    """The page, served on `host` (a port of its own)."""
    site = FormSite()
    app = web.Application()
    app.router.add_get("/form", site._form)
    app.router.add_get("/colour", site._colour)
    app.router.add_get("/click", site._click)
    app.router.add_get("/handback", site._handback)
    app.router.add_get("/privacy", site._privacy)
    app.router.add_get("/handback-next", site._handback_next)
    app.router.add_get("/signup", site._signup)
    app.router.add_post("/signup", site._signed_up)
    app.router.add_post("/log", site._log)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tcp = web.TCPSite(runner, host, 0)
    await tcp.start()
    port = runner.addresses[0][1]
    site.url = f"http://{host}:{port}"
    try:
        yield site
    finally:
        await runner.cleanup()


@dataclass
class FullStack:
    display: RunningServer
    automation: RunningServer
    session: RunningServer
    edge: RunningEdge
    site: FormSite
    http: aiohttp.ClientSession
    sessions_stub: session_pb2_grpc.SessionServiceAsyncStub
    profile_root: Path
    edge_settings: EdgeSettings
    session_settings: SessionSettings

    @property
    def url(self) -> str:
        return self.edge.base_url

    async def restart_edge(
        self,
        while_down: Callable[[], Awaitable[None]] | None = None,
        api_token: str = OPERATOR_TOKEN,
    ) -> None:
        """Stop the edge (its connections close) and start a new one on its port,
        after `while_down` when given, with `api_token` as its operator token."""
        port = self.edge.port
        await self.edge.stop()
        if while_down is not None:
            await while_down()
        self.edge = await start_edge_server(
            replace(self.edge_settings, port=port), Authenticator(api_token, JWT_SECRET)
        )

    async def restart_session(self) -> None:
        """Stop the session service and start a new one on its port, as a restart
        of `make run` does: with the stack's in-memory store, every session is gone."""
        port = self.session.port
        await self.session.stop(1.0)
        self.session = await start_session_server(
            self.session_settings, address=f"127.0.0.1:{port}"
        )

    def client(self, token: str) -> BatonClient:
        """baton.client as `token`'s holder, on the stack's HTTP session."""
        return BatonClient(self.url, token, http=self.http)

    async def request(self, method: str, path: str, token: str, body: Any = None) -> Any:
        """The edge's JSON answer; ApiError (status, message) for a refusal."""
        return await self.client(token).request(method, path, body)

    async def metric(self, name: str) -> float:
        """One unlabelled figure of the edge's /metrics."""
        text = await self.client(OPERATOR_TOKEN).request("GET", "/metrics")
        [line] = [line for line in text.splitlines() if line.startswith(f"{name} ")]
        return float(line.split()[1])

    async def wait_for_metric(self, name: str, value: float, within_s: float = 5.0) -> None:
        """Return once the edge's unlabelled figure `name` equals `value`; fail
        after `within_s` seconds, naming it, the value wanted and the last seen."""
        await _settles(lambda: self.metric(name), value, name, within_s)

    async def wait_for_vnc_clients(
        self, session_id: str, count: int, within_s: float = 5.0
    ) -> None:
        """Return once the session's VNC server has `count` connections."""
        await _settles(
            lambda: self.vnc_clients(session_id), count, "the VNC server's connections", within_s
        )

    async def slot(self, slot_id: str) -> display_pb2.Slot:
        async with open_channel(f"127.0.0.1:{self.display.port}", INTERNAL_TOKEN) as channel:
            answer = await display_pb2_grpc.DisplayServiceStub(channel).GetSlot(
                display_pb2.GetSlotRequest(slot_id=slot_id)
            )
        return answer.slot

    async def vnc_clients(self, session_id: str) -> int:
        """Connections established to the session's VNC server (one per upstream)."""
        slot = await self.slot((await self.placement(session_id)).slot_id)
        port = int(slot.vnc_address.rsplit(":", 1)[1])
        count = 0
        for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
            for line in table.read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "01":  # ESTABLISHED
                    count += 1
        return count

    async def placement(self, session_id: str) -> session_pb2.Placement:
        answer = await self.sessions_stub.GetSession(
            session_pb2.GetSessionRequest(
                session_id=session_id,
                actor=session_pb2.Actor(user_id="operator", operator=True),
            )
        )
        return answer.session.placement

    async def wait_for_session(
        self, token: str, session_id: str, predicate: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        """Poll the session until `predicate` holds (the test's timeout bounds it)."""
        session = await self.client(token).wait_for_session(
            session_id, lambda s: predicate(cast(dict[str, Any], s))
        )
        return cast(dict[str, Any], session)


def require_stack_binaries() -> None:
    require_binary("Xvnc", "tigervnc-standalone-server")
    require_binary("chromium", "chromium")


@contextlib.asynccontextmanager
async def full_stack(
    work_dir: Path,
    displays: NumberRange = DISPLAYS,
    vnc_ports: NumberRange = VNC_PORTS,
    input_drain_ms: int = AutomationSettings.input_drain_ms,
    webhook: WebhookSettings = NO_WEBHOOKS,
    finished_idle_s: float = SessionSettings.finished_idle_s,
    cors_origins: tuple[str, ...] = (),
    recording_bucket: RecordingBucket | None = None,
    llm: LlmSettings = NO_LLM,
) -> AsyncIterator[FullStack]:
    require_stack_binaries()
    # The browsers' own users go through it to their profiles (browser_user.py).
    searchable(work_dir)
    profile_root = work_dir / "profiles"
    profile_root.mkdir()
    async with contextlib.AsyncExitStack() as stack:
        site = await stack.enter_async_context(form_site())
        display = await start_display_server(
            DisplaySettings(
                internal_token=INTERNAL_TOKEN,
                host_id="edge-e2e",
                backend=Backend.XVNC,
                max_slots=2,
                warm_slots=0,
                displays=displays,
                vnc_ports=vnc_ports,
                state_dir=work_dir / "display",
                stop_grace=1.0,
                recording_bucket=recording_bucket,
            )
        )
        stack.push_async_callback(display.stop, 1.0)
        automation = await start_automation_server(
            AutomationSettings(
                internal_token=INTERNAL_TOKEN,
                profile_root=profile_root,
                action_timeout_ms=10000,
                input_drain_ms=input_drain_ms,
                llm=llm,
            ),
            environ=dict(os.environ),
        )
        stack.push_async_callback(automation.stop, 1.0)
        session_settings = SessionSettings(
            internal_token=INTERNAL_TOKEN,
            host_id="edge-e2e",
            display_address=f"127.0.0.1:{display.port}",
            automation_address=f"127.0.0.1:{automation.port}",
            webhook=webhook,
            finished_idle_s=finished_idle_s,
        )
        session = await start_session_server(session_settings)
        stack.push_async_callback(session.stop, 1.0)
        settings = EdgeSettings(
            internal_token=INTERNAL_TOKEN,
            port=0,
            session_address=f"127.0.0.1:{session.port}",
            api_token=OPERATOR_TOKEN,
            jwt_secret=JWT_SECRET,
            cors_origins=cors_origins,
        )
        http = aiohttp.ClientSession()
        stack.push_async_callback(http.close)
        channel = open_channel(f"127.0.0.1:{session.port}", INTERNAL_TOKEN)
        stack.push_async_callback(channel.close, None)
        running = FullStack(
            display=display,
            automation=automation,
            session=session,
            edge=await start_edge_server(settings, Authenticator(OPERATOR_TOKEN, JWT_SECRET)),
            site=site,
            http=http,
            sessions_stub=session_pb2_grpc.SessionServiceStub(channel),
            profile_root=profile_root,
            edge_settings=settings,
            session_settings=session_settings,
        )

        async def stop_replaced_session() -> None:
            # One restart_session started (the first is stopped by its own callback).
            if running.session is not session:
                await running.session.stop(1.0)

        stack.push_async_callback(stop_replaced_session)
        # The edge running at the end (restart_edge replaces it).
        stack.push_async_callback(lambda: running.edge.stop())
        yield running
