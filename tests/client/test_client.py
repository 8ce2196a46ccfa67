"""baton.client against the whole product on loopback (tests/edge/full_stack.py):
the REST calls and Socket.IO events a backend makes, the URLs it is handed
opening for real, the edge's refusals as ApiError, and the gRPC helpers reaching
the real session service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from playwright.async_api import async_playwright

from baton.client import ApiError, BatonClient, SessionSummary
from baton.client.services import (
    channel_from_env,
    open_service_channel,
    operator,
    session_service,
    user,
)
from baton.session.v1 import session_pb2
from services.display.settings import NumberRange
from tests.conftest import INTERNAL_TOKEN
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.harness import OPERATOR_TOKEN, user_token
from tests.edge.test_full_stack import raw_viewer

pytestmark = pytest.mark.asyncio(loop_scope="module")

DISPLAYS = NumberRange(2500, 2509)
VNC_PORTS = NumberRange(22500, 22509)
ALICE = user_token("alice")
BOB = user_token("bob")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FullStack]:
    async with full_stack(tmp_path_factory.mktemp("client"), DISPLAYS, VNC_PORTS) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def alice(stack: FullStack) -> AsyncIterator[BatonClient]:
    async with BatonClient(stack.url, ALICE) as client:
        yield client
        # Free the stack's two slots for the next test.
        async for session in client.all_sessions():
            if session["state"] not in ("ENDED", "FAILED"):
                await client.end_session(session["id"])


async def external_session(stack: FullStack, client: BatonClient) -> SessionSummary:
    return await client.create_session(agent="external", url=stack.site.form_url)


async def test_a_session_created_watched_taken_over_returned_and_ended(
    stack: FullStack, alice: BatonClient
) -> None:
    async with alice.events() as events:
        session = await events.create_session(agent="external", url=stack.site.form_url)
        session_id = session["id"]
        created = await events.wait_for(lambda e: True, timeout_s=20, names=["session:created"])
        assert created.session is not None and created.session["id"] == session_id
        assert session["state"] == "AI_CONTROL", session

        watched = await events.watch(session_id)
        assert isinstance(watched["steps"], list)
        listed = await alice.list_sessions()
        assert session_id in [s["id"] for s in listed["sessions"]]
        assert listed["nextPageToken"] is None

        # The CDP URL attaches Playwright to the page the live view shows.
        cdp = await alice.get_cdp_url(session_id)
        assert "/cdp/ws?token=" in cdp["url"]
        async with async_playwright() as playwright:
            browser = await playwright.chromium.connect_over_cdp(cdp["url"])
            [page] = browser.contexts[0].pages
            assert await page.title() == "Baton test form"
            await browser.close()
        taken = await alice.take_control(session_id, expected_version=watched["version"])
        assert (taken["state"], taken["controller"]) == ("USER_CONTROL", "user")
        change = await events.wait_for(
            lambda e: e.data.get("action") == "take_control",
            timeout_s=20,
            names=["session:control_changed"],
        )
        assert change.session is not None and change.session["state"] == "USER_CONTROL"

        # The live view's URL is the person's: their keys reach the page.
        stream = await alice.get_stream_url(session_id)
        assert stream["viewOnly"] is False and stream["expiresAt"].endswith("Z")
        stack.site.clear()
        viewport = session.get("viewport", {"width": 800, "height": 600})
        async with raw_viewer(stream["url"]) as viewer:
            await viewer.click(viewport["width"] // 2, viewport["height"] // 2)
            await viewer.type("k")
            await viewer.sync()
            async with asyncio.timeout(20):
                await stack.site.wait_until(lambda: stack.site.keys() == "k")

        returned = await alice.return_control(session_id, expected_version=taken["version"])
        assert returned["state"] == "AI_CONTROL"
        await events.wait_for(
            lambda e: e.data.get("action") == "return_control",
            timeout_s=20,
            names=["session:control_changed"],
        )

        rejecting = await alice.get_cdp_url(session_id, on_user_control="reject")
        assert rejecting["url"].endswith("&onUserControl=reject")

        ended = await alice.end_session(session_id)
        assert ended["state"] == "ENDED"
        final = await events.wait_for(lambda e: True, timeout_s=20, names=["session:ended"])
        assert final.session is not None and final.session["id"] == session_id
        assert (await alice.get_session(session_id))["state"] == "ENDED"


async def test_the_edges_refusals_are_api_errors_with_status_and_message(
    stack: FullStack, alice: BatonClient
) -> None:
    session = await external_session(stack, alice)
    session_id = session["id"]
    async with BatonClient(stack.url, BOB) as bob:
        # Another user's session does not exist for them, over REST and Socket.IO.
        with pytest.raises(ApiError) as refused:
            await bob.get_session(session_id)
        assert (refused.value.status, refused.value.code) == (404, "not_found")
        assert refused.value.message
        async with bob.events() as events:
            with pytest.raises(ApiError) as refused:
                await events.watch(session_id)
            assert (refused.value.status, refused.value.code) == (404, "not_found")
    # A stale version: someone else changed the session since it was read.
    taken = await alice.take_control(session_id, expected_version=session["version"])
    with pytest.raises(ApiError) as stale:
        await alice.return_control(session_id, expected_version=session["version"])
    assert (stale.value.status, stale.value.code) == (409, "conflict")
    assert stale.value.message
    assert (await alice.get_session(session_id))["version"] == taken["version"]
    # A token the edge does not know, over REST and Socket.IO.
    async with BatonClient(stack.url, "not-a-token") as stranger:
        with pytest.raises(ApiError) as unknown:
            await stranger.list_sessions()
        assert (unknown.value.status, unknown.value.code) == (401, "unauthenticated")
        assert unknown.value.message
        with pytest.raises(ApiError) as unknown:
            async with stranger.events():
                pass
        assert (unknown.value.status, unknown.value.code) == (401, "unauthenticated")
    # A route the edge does not have: still ApiError, never aiohttp's.
    with pytest.raises(ApiError) as missing:
        await alice.request("GET", "/api/no-such-route")
    assert missing.value.status == 404


async def test_the_grpc_helpers_reach_the_session_service(
    stack: FullStack, alice: BatonClient
) -> None:
    session = await external_session(stack, alice)
    address = f"127.0.0.1:{stack.session.port}"
    async with open_service_channel(address, INTERNAL_TOKEN.value) as channel:
        sessions = session_service(channel)
        answer = await sessions.GetSession(
            session_pb2.GetSessionRequest(session_id=session["id"], actor=operator())
        )
        assert answer.session.id == session["id"]
        assert answer.session.version == session["version"]
        # As a user, only that user's sessions exist.
        mine = await sessions.GetSession(
            session_pb2.GetSessionRequest(session_id=session["id"], actor=user("alice"))
        )
        assert mine.session.id == session["id"]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await sessions.GetSession(
                session_pb2.GetSessionRequest(session_id=session["id"], actor=user("bob"))
            )
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    # Configured from the environment as the services are.
    environ = {"BATON_SESSION_ADDRESS": address, "BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value}
    async with channel_from_env(environ=environ) as channel:
        listed = await session_service(channel).ListSessions(
            session_pb2.ListSessionsRequest(actor=operator())
        )
        assert session["id"] in [s.id for s in listed.sessions]
    # The credential is what lets it in.
    wrong = "a-wrong-internal-token-0123456789abcdef"
    async with open_service_channel(address, wrong) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await session_service(channel).ListSessions(
                session_pb2.ListSessionsRequest(actor=operator())
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_operator_sees_every_users_sessions(stack: FullStack, alice: BatonClient) -> None:
    session = await external_session(stack, alice)
    async with BatonClient(stack.url, OPERATOR_TOKEN) as operator_client:
        ids = [s["id"] async for s in operator_client.all_sessions(page_size=1)]
        assert session["id"] in ids
        assert (await operator_client.get_session(session["id"]))["ownerUserId"] == "alice"
        metrics = await operator_client.request("GET", "/metrics")
        assert "baton_cdp_connections" in metrics
