"""Viewers keep a session from idling out only while the edge says they are there."""

from __future__ import annotations

import asyncio

import pytest

from services.edge import stream_proxy
from services.session.settings import SessionSettings
from tests.conftest import INTERNAL_TOKEN
from tests.edge.harness import Stack, bearer, running_stack
from tests.edge.test_stream import ALICE, viewer

# Short enough for a test, with wide margins between them.
SETTINGS = SessionSettings(internal_token=INTERNAL_TOKEN, idle_timeout_s=1.0, viewer_lease_s=0.6)


async def state_of(stack: Stack, session_id: object) -> str:
    async with stack.http.get(
        f"{stack.url}/api/browser-session/{session_id}", headers=bearer(ALICE)
    ) as response:
        state: str = (await response.json())["state"]
        return state


async def wait_for_state(stack: Stack, session_id: object, state: str, within_s: float) -> None:
    for _ in range(int(within_s / 0.05)):
        if await state_of(stack, session_id) == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"session never became {state}")


async def test_a_watched_session_lives_until_its_viewer_leaves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stream_proxy, "VIEWER_PRESENT_INTERVAL_S", 0.1)
    async with running_stack(session_settings=SETTINGS) as stack:
        session = await stack.create_session(ALICE)
        async with viewer(await stack.stream_url(ALICE, session["id"])):
            # Three idle timeouts with the viewer present: still live.
            await asyncio.sleep(3.0)
            assert await state_of(stack, session["id"]) == "AI_CONTROL"
        await wait_for_state(stack, session["id"], "ENDED", within_s=5.0)


async def test_viewers_nobody_vouches_for_lapse(monkeypatch: pytest.MonkeyPatch) -> None:
    # As when the edge that holds the viewer has died: no presence reports.
    monkeypatch.setattr(stream_proxy, "VIEWER_PRESENT_INTERVAL_S", 3600.0)
    async with running_stack(session_settings=SETTINGS) as stack:
        session = await stack.create_session(ALICE)
        async with viewer(await stack.stream_url(ALICE, session["id"])):
            await wait_for_state(stack, session["id"], "ENDED", within_s=6.0)
