"""A password filled by a step reaches the real page and nothing else (issue 12,
finding 2): the session service with the memory store, the real automation
service, Chromium on a private Xvfb, and a page that posts what it received.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from baton.automation.v1 import automation_pb2 as pb
from baton.display.v1 import display_pb2
from baton.session.v1 import session_pb2, session_pb2_grpc
from services.automation.server import start_automation_server
from services.automation.settings import AutomationSettings
from services.runtime.grpc_client import open_channel
from services.session import codec
from services.session.grpc_workers import GrpcAutomation
from services.session.server import start_session_server
from services.session.settings import SessionSettings
from services.session.store import MemoryStore
from services.session.workers import WorkerHost
from tests.automation.support import PageServer, private_xvfb
from tests.conftest import INTERNAL_TOKEN, eventually
from tests.session.twins import DisplayTwin

SECRET = "pa55-Word-in-the-page-7731"
ALICE = session_pb2.Actor(user_id="alice")
# This test's own display numbers (issue 12 helpers each have a range).
DISPLAYS = range(900, 950)
# The form's third field, <input id="password" type="password">.
FIELD = "label:nth-of-type(3) > input"


@pytest.fixture(scope="module")
def own_display() -> Iterator[str]:
    with private_xvfb(numbers=DISPLAYS) as display:
        yield display


class XvfbDisplay(DisplayTwin):
    """Slots on the one private Xvfb."""

    def __init__(self, display: str) -> None:
        super().__init__()
        self.display = display

    async def allocate_slot(
        self, session_id: str, viewport: display_pb2.Viewport, record: bool = False
    ) -> display_pb2.Slot:
        slot = await super().allocate_slot(session_id, viewport, record)
        slot.display = self.display
        self.slots[slot.id] = slot
        return slot


@pytest.mark.timeout(90)
async def test_a_filled_password_reaches_the_page_and_is_kept_nowhere(
    own_display: str, site: PageServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    automation = await start_automation_server(
        AutomationSettings(
            internal_token=INTERNAL_TOKEN, action_timeout_ms=10000, profile_root=tmp_path
        )
    )
    automation_channel = open_channel(f"127.0.0.1:{automation.port}", INTERNAL_TOKEN)
    worker = WorkerHost(
        host_id="real-automation",
        display_address="twin-display",
        automation_address=f"127.0.0.1:{automation.port}",
        display=XvfbDisplay(own_display),
        automation=GrpcAutomation(automation_channel),
    )
    store = MemoryStore()
    session_server = await start_session_server(
        SessionSettings(
            internal_token=INTERNAL_TOKEN,
        ),
        worker=worker,
        store=store,
    )
    channel = open_channel(f"127.0.0.1:{session_server.port}", INTERNAL_TOKEN)
    stub = session_pb2_grpc.SessionServiceStub(channel)
    try:
        steps = [
            # The selector does not name a password: the page's type=password does.
            pb.Step(fill=pb.FillAction(selector=FIELD, value=SECRET)),
            pb.Step(fill=pb.FillAction(selector="#name", value="Ada")),
            pb.Step(click=pb.ClickAction(selector="#submit")),
            pb.Step(wait_for=pb.WaitForAction(selector="#thanks")),
        ]
        created = await stub.CreateSession(
            session_pb2.CreateSessionRequest(
                actor=ALICE, task="sign up", url=f"{site.base_url}/form", steps=steps
            )
        )
        session_id = created.session.id
        # Positive marker: the page received the password.
        await eventually(lambda: bool(site.recorder.submissions), within_s=60)
        assert site.recorder.submissions[0]["password"] == SECRET

        async def completed() -> session_pb2.Session:
            while True:
                got = await stub.GetSession(
                    session_pb2.GetSessionRequest(session_id=session_id, actor=ALICE)
                )
                if got.session.task.status == pb.TASK_STATUS_COMPLETED:
                    return got.session
                await asyncio.sleep(0.1)

        session = await asyncio.wait_for(completed(), 30)
        listed = await stub.ListSessions(session_pb2.ListSessionsRequest(actor=ALICE))
        descriptions = [step.description for step in session.steps]
        assert f"fill {FIELD} with [redacted]" in descriptions
        assert "fill #name with 'Ada'" in descriptions
        # The records and, beside them, the step logs (store.py).
        stored = b"".join(codec.encode(s.session) for s in await store.list_all())
        full = await store.get_full(session_id)
        assert full is not None and full[0].steps
        stored += b"".join(codec.encode_step(step) for step in full[0].steps)
        for kept in (created.SerializeToString(), listed.SerializeToString(), stored):
            assert SECRET.encode() not in kept
        assert SECRET not in caplog.text
    finally:
        await channel.close(None)
        await session_server.stop(grace=1)
        await automation_channel.close(None)
        await automation.stop(grace=1)
