"""AutomationService.Cdp: an external CDP client, gated by control (cdp_gate.py).

Real gRPC server, real headful Chromium: commands that change the page wait
while the session is paused and run, in order, on resume; reads pass; with
reject_on_user_control they are refused at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from baton.automation.v1 import automation_pb2 as pb
from services.automation.cdp_gate import BROWSER_IS_THE_SESSIONS, PERSON_HAS_CONTROL
from tests.automation.conftest import Automation, TaskStream
from tests.automation.support import PageServer

pytestmark = pytest.mark.asyncio(loop_scope="module")


class CdpConversation:
    """One Cdp stream: commands in, answers, events and gate reports out."""

    def __init__(self, automation: Automation, session_id: str, reject: bool = False) -> None:
        self._outgoing: asyncio.Queue[pb.CdpRequest | None] = asyncio.Queue()
        self._outgoing.put_nowait(
            pb.CdpRequest(open=pb.CdpOpen(session_id=session_id, reject_on_user_control=reject))
        )
        self.call = automation.stub.Cdp(self._requests())
        self.answers: dict[int, dict[str, Any]] = {}
        self.gate: list[pb.CdpGateEvent] = []
        self.changed = asyncio.Event()
        self.reader = asyncio.ensure_future(self._read())
        self._next_id = 0

    async def _requests(self) -> AsyncIterator[pb.CdpRequest]:
        while (request := await self._outgoing.get()) is not None:
            yield request

    async def _read(self) -> None:
        try:
            async for response in self.call:
                if response.HasField("gate"):
                    self.gate.append(response.gate)
                else:
                    message = json.loads(response.message)
                    if "id" in message:
                        self.answers[message["id"]] = message
                self.changed.set()
        finally:
            self.changed.set()

    def send(self, method: str, session: str | None = None, **params: Any) -> int:
        self._next_id += 1
        command: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            command["sessionId"] = session
        self._outgoing.put_nowait(pb.CdpRequest(message=json.dumps(command)))
        return self._next_id

    async def answer(self, command_id: int, within_s: float = 10) -> dict[str, Any]:
        async def arrived() -> dict[str, Any]:
            while command_id not in self.answers:
                self.changed.clear()
                if self.reader.done():
                    raise AssertionError(f"the stream ended: {self.reader.exception()}")
                await self.changed.wait()
            return self.answers[command_id]

        return await asyncio.wait_for(arrived(), within_s)

    async def call_and_answer(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.answer(self.send(method, **params))

    async def page_session(self) -> str:
        targets = await self.call_and_answer("Target.getTargets")
        [page] = [t for t in targets["result"]["targetInfos"] if t["type"] == "page"]
        attached = await self.call_and_answer(
            "Target.attachToTarget", targetId=page["targetId"], flatten=True
        )
        return str(attached["result"]["sessionId"])

    async def close(self) -> None:
        self._outgoing.put_nowait(None)
        await asyncio.wait_for(self.reader, 10)


def title_set(cdp: CdpConversation, session: str, title: str) -> int:
    return cdp.send("Runtime.evaluate", session=session, expression=f"document.title = {title!r}")


async def title(automation: Automation, session_id: str) -> str:
    state = await automation.stub.GetPageState(pb.GetPageStateRequest(session_id=session_id))
    return state.title


async def opened(automation: Automation, site: PageServer, session_id: str) -> None:
    stream = TaskStream.open(
        automation.stub,
        automation.task(session_id, url=f"{site.base_url}/form", planner=pb.PLANNER_NONE),
    )
    await stream.final()


async def test_commands_wait_while_paused_and_run_in_order_on_resume(
    automation: Automation, site: PageServer
) -> None:
    await opened(automation, site, "cdp-hold")
    cdp = CdpConversation(automation, "cdp-hold")
    page = await cdp.page_session()
    assert (await cdp.answer(title_set(cdp, page, "one")))["result"]["result"]["value"] == "one"
    assert await title(automation, "cdp-hold") == "one"

    await automation.stub.PauseTask(pb.PauseTaskRequest(session_id="cdp-hold"))
    second, third = title_set(cdp, page, "two"), title_set(cdp, page, "three")
    # A read passes meanwhile (the path is live); the page is left as it was.
    read = cdp.send("DOM.getDocument", session=page)
    assert "result" in await cdp.answer(read)
    await asyncio.sleep(0.5)
    assert second not in cdp.answers and third not in cdp.answers
    assert await title(automation, "cdp-hold") == "one"
    assert [g.action for g in cdp.gate] == [pb.CDP_GATE_ACTION_HELD] * 2

    await automation.stub.ResumeTask(pb.ResumeTaskRequest(session_id="cdp-hold"))
    assert (await cdp.answer(second))["result"]["result"]["value"] == "two"
    assert (await cdp.answer(third))["result"]["result"]["value"] == "three"
    assert await title(automation, "cdp-hold") == "three"
    released = [g for g in cdp.gate if g.action == pb.CDP_GATE_ACTION_RELEASED]
    assert len(released) == 2 and all(g.held_seconds >= 0.4 for g in released)

    # Closing the browser is the session's end, never an agent's.
    refused = await cdp.call_and_answer("Browser.close")
    assert refused["error"]["message"] == BROWSER_IS_THE_SESSIONS
    assert await title(automation, "cdp-hold") == "three"
    await cdp.close()
    await automation.stub.CloseBrowser(pb.CloseBrowserRequest(session_id="cdp-hold"))


async def test_reject_mode_refuses_at_once_while_paused(
    automation: Automation, site: PageServer
) -> None:
    await opened(automation, site, "cdp-reject")
    cdp = CdpConversation(automation, "cdp-reject", reject=True)
    page = await cdp.page_session()
    await automation.stub.PauseTask(pb.PauseTaskRequest(session_id="cdp-reject"))
    refused = await cdp.answer(title_set(cdp, page, "never"))
    assert refused["error"]["message"] == PERSON_HAS_CONTROL
    assert refused["sessionId"] == page
    assert [g.action for g in cdp.gate] == [pb.CDP_GATE_ACTION_REJECTED]
    await automation.stub.ResumeTask(pb.ResumeTaskRequest(session_id="cdp-reject"))
    assert (await cdp.answer(title_set(cdp, page, "after")))["result"]["result"]["value"] == "after"
    assert await title(automation, "cdp-reject") == "after"
    await cdp.close()
    await automation.stub.CloseBrowser(pb.CloseBrowserRequest(session_id="cdp-reject"))


async def test_a_session_without_a_browser_here_is_not_found(automation: Automation) -> None:
    cdp = CdpConversation(automation, "no-such-session")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await asyncio.wait_for(cdp.reader, 10)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
