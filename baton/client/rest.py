"""The edge's REST API (docs/openapi.json), one method per operation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import aiohttp

from baton.client.bodies import create_body
from baton.client.errors import ApiError
from baton.client.events import EventStream
from baton.client.types import (
    Agent,
    AutoReturn,
    Cdp,
    ControlAction,
    HandOver,
    Session,
    SessionPage,
    SessionSummary,
    Share,
    ShareCreated,
    ShareRole,
    Step,
    Stream,
    Timeline,
    Viewport,
)

SESSIONS = "/api/browser-session"


def _session_path(session_id: str, tail: str = "") -> str:
    return f"{SESSIONS}/{quote(session_id, safe='')}{tail}"


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query), *params.items()])
    return urlunsplit(parts._replace(query=query))


def _retry_after(headers: Mapping[str, str]) -> int | None:
    value = headers.get("Retry-After", "")
    return int(value) if value.isdigit() else None


def _error_of(status: int, text: str, headers: Mapping[str, str]) -> ApiError:
    """The edge's error body `{"error": {code, message}}`, or whatever answered."""
    try:
        error = json.loads(text)["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = f"http_{status}", text.strip()[:500] or f"HTTP {status}"
    return ApiError(status, code, message, _retry_after(headers))


class BatonClient:
    """An async client of one edge for one caller (the operator token or a user JWT).

        async with BatonClient("http://127.0.0.1:8080", token) as baton:
            session = await baton.create_session("find the price", "https://example.com")

    Every method answers the edge's JSON, typed (baton.client.types); a refusal
    (4xx) or failure (5xx) raises ApiError with the status and the edge's message.
    A network failure raises aiohttp's ClientError as it is. `timeout_s` bounds
    each request: above the edge's own 90 s for a session to start.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        http: aiohttp.ClientSession | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        # A session passed in is the caller's to close.
        self._own_http = http is None
        self._http = http

    async def __aenter__(self) -> BatonClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        return self._http

    async def request(
        self,
        method: str,
        path: str,
        body: object = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """Any route of the edge: its JSON answer (text for other content), or
        ApiError for any status >= 400."""
        async with self._session().request(
            method,
            f"{self.base_url}{path}",
            json=body,
            params=params,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=self._timeout,
        ) as response:
            text = await response.text()
            if response.status >= 400:
                raise _error_of(response.status, text, response.headers)
            if response.content_type != "application/json":
                return text  # /metrics: Prometheus text
            return json.loads(text) if text else None

    # -- operations of docs/openapi.json (operationId in each docstring) --

    async def create_session(
        self,
        task: str = "",
        url: str | None = None,
        *,
        steps: Sequence[Step] | None = None,
        max_steps: int | None = None,
        agent: Agent | None = None,
        hand_over: HandOver | None = None,
        viewport: Viewport | None = None,
        record: bool | None = None,
    ) -> SessionSummary:
        """createSession: a task text and a URL to plan from, or explicit `steps`
        (docs/steps.md); `agent="external"` for a CDP client (get_cdp_url);
        `record=True` to record its display (get_timeline)."""
        body = create_body(
            task,
            url,
            steps=steps,
            max_steps=max_steps,
            agent=agent,
            hand_over=hand_over,
            viewport=viewport,
            record=record,
        )
        return cast(SessionSummary, await self.request("POST", SESSIONS, body))

    async def list_sessions(
        self, page_size: int | None = None, page_token: str | None = None
    ) -> SessionPage:
        """listSessions: one page of the caller's sessions (an operator's: all), oldest first."""
        params = {}
        if page_size is not None:
            params["pageSize"] = str(page_size)
        if page_token is not None:
            params["pageToken"] = page_token
        return cast(SessionPage, await self.request("GET", SESSIONS, params=params))

    async def all_sessions(self, page_size: int | None = None) -> AsyncIterator[SessionSummary]:
        """Every session of listSessions, page after page."""
        token: str | None = None
        while True:
            page = await self.list_sessions(page_size, token)
            for session in page["sessions"]:
                yield session
            token = page["nextPageToken"]
            if not token:
                return

    async def get_session(self, session_id: str) -> Session:
        """getSession: the session with its newest steps."""
        return cast(Session, await self.request("GET", _session_path(session_id)))

    async def end_session(self, session_id: str) -> SessionSummary:
        """endSession: its slot, browser and processes go away."""
        return cast(SessionSummary, await self.request("DELETE", _session_path(session_id)))

    async def change_control(
        self,
        session_id: str,
        action: ControlAction,
        expected_version: int | None = None,
        to: str | None = None,
        auto_return: AutoReturn | None = None,
    ) -> SessionSummary:
        """changeControl. With `expected_version` (the `version` last read) the change
        is refused with 409 (code conflict) when the session changed since; `to`
        is who a hand_over gives control to; `auto_return`, take_control's
        conditions for control to come back by itself."""
        body: dict[str, Any] = {"action": action}
        if expected_version is not None:
            body["expectedVersion"] = expected_version
        if to is not None:
            body["to"] = to
        if auto_return is not None:
            body["autoReturn"] = auto_return
        path = _session_path(session_id, "/control")
        return cast(SessionSummary, await self.request("PUT", path, body))

    async def hand_over(self, session_id: str, to: str) -> SessionSummary:
        """The person in control gives it to `to` (docs/state-machine.md)."""
        return await self.change_control(session_id, "hand_over", to=to)

    async def request_control(self, session_id: str) -> SessionSummary:
        """requestControl: ask the person in control for it (session:control_requested)."""
        path = _session_path(session_id, "/control-requests")
        return cast(SessionSummary, await self.request("POST", path))

    async def create_share(
        self, session_id: str, role: ShareRole, ttl_s: float | None = None, label: str = ""
    ) -> ShareCreated:
        """createShare: a URL and a token opening this one session to someone
        without an account (README, "Sharing a session")."""
        body: dict[str, Any] = {"role": role, "label": label}
        if ttl_s is not None:
            body["ttlSeconds"] = ttl_s
        path = _session_path(session_id, "/shares")
        return cast(ShareCreated, await self.request("POST", path, body))

    async def list_shares(self, session_id: str) -> list[Share]:
        """listShares: the session's shares that still open it (never their tokens)."""
        answer = await self.request("GET", _session_path(session_id, "/shares"))
        return cast(list[Share], answer["shares"])

    async def revoke_share(self, session_id: str, share_id: str) -> None:
        """revokeShare: its token opens nothing, what it opened closes."""
        await self.request("DELETE", _session_path(session_id, f"/shares/{share_id}"))

    async def get_timeline(self, session_id: str) -> Timeline:
        """getTimeline: the steps and control changes, placed in the recording."""
        return cast(Timeline, await self.request("GET", _session_path(session_id, "/timeline")))

    async def take_control(
        self,
        session_id: str,
        expected_version: int | None = None,
        auto_return: AutoReturn | None = None,
    ) -> SessionSummary:
        """A person takes the browser over: the agent's input stops (docs/state-machine.md);
        with `auto_return`, control comes back by itself when a condition holds."""
        return await self.change_control(
            session_id, "take_control", expected_version, auto_return=auto_return
        )

    async def return_control(
        self, session_id: str, expected_version: int | None = None
    ) -> SessionSummary:
        """The agent goes on; the person's input stops reaching the browser."""
        return await self.change_control(session_id, "return_control", expected_version)

    async def pause(self, session_id: str, expected_version: int | None = None) -> SessionSummary:
        return await self.change_control(session_id, "pause", expected_version)

    async def resume(self, session_id: str, expected_version: int | None = None) -> SessionSummary:
        return await self.change_control(session_id, "resume", expected_version)

    async def get_stream_url(self, session_id: str, watch: bool = False) -> Stream:
        """getStreamUrl: a short-lived WebSocket URL for a VNC viewer such as noVNC;
        `watch` for a watch-only stream (docs/stream.md, "Watch-only streams")."""
        path = _session_path(session_id, "/stream")
        params = {"watch": "true"} if watch else None
        return cast(Stream, await self.request("GET", path, params=params))

    async def get_cdp_url(
        self, session_id: str, on_user_control: Literal["hold", "reject"] = "hold"
    ) -> Cdp:
        """getCdpUrl: a short-lived, single-use CDP WebSocket URL for Playwright's
        `connect_over_cdp` or Puppeteer's `connect`. While a person has control the
        edge holds the client's page-changing commands; "reject" has them refused
        at once instead (services/edge/README.md, "CDP")."""
        cdp = cast(Cdp, await self.request("GET", _session_path(session_id, "/cdp")))
        if on_user_control == "reject":
            cdp["url"] = _with_query(cdp["url"], onUserControl="reject")
        return cdp

    async def wait_for_session(
        self,
        session_id: str,
        predicate: Callable[[Session], bool],
        timeout_s: float | None = None,
        interval_s: float = 0.1,
    ) -> Session:
        """Read the session until `predicate` holds; TimeoutError after `timeout_s`.
        (Socket.IO's events tell the same without polling: events().)"""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            session = await self.get_session(session_id)
            if predicate(session):
                return session
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"session {session_id} did not get there in {timeout_s:g} s")
            await asyncio.sleep(interval_s)

    # -- Socket.IO (docs/asyncapi.yaml) --

    def events(self) -> contextlib.AbstractAsyncContextManager[EventStream]:
        """A Socket.IO connection to the edge with this client's token:

        async with baton.events() as events:
            await events.watch(session_id)
            event = await events.wait_for(lambda e: e.name == "session:ended")
        """
        return EventStream.connect(self.base_url, self.token, self._session())
