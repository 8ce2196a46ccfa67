"""Twenty handoffs through two edges, an agent and a person both acting non-stop.

The agent is an external caller of automation's `Act`, pressing a key again and
again (refused while a person has control); the person types through the stream
of the second edge while control changes are made through the first. The form
page logs every key in the order Chromium saw it, and each phase has its own keys
(the person types the next USER phase's key from the moment control returns, so
nothing they type is ever labelled with an older phase). At the page, phases never
go back:

- no agent key after a key the person typed under USER_CONTROL (the action gate
  closes on USER_CONTROL even though the task has finished);
- no key the person typed before control returned after the agent's first action
  that followed: the handoff fence closes the edges' gates, then automation's
  input drain (services/automation/input_drain.py) waits until Chromium has handed
  the page every X event queued before, though Chromium hands native X keys to the
  page later than CDP input (over 200 ms seen under load).

Once return_control has answered, the second edge forwards none of the person's
input, though the person keeps typing.

`BATON_TEST_INPUT_DRAIN_MS=0` runs it with the drain off (how the second property
fails without it).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from baton.automation.v1 import automation_pb2, automation_pb2_grpc
from services.display.settings import NumberRange
from services.edge.auth import Authenticator
from services.edge.server import start_edge_server
from services.edge.settings import EdgeSettings
from services.runtime.grpc_client import open_channel
from tests.conftest import INTERNAL_TOKEN
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.harness import JWT_SECRET, OPERATOR_TOKEN, user_token
from tests.edge.test_full_stack import raw_viewer, stream_url

ALICE = user_token("alice")
HANDOFFS = 20
# The agent's key in AI phase k (0 before the first handoff), the person's in
# USER phase k (1-based); keys that need no shift, so each is one keysym.
AGENT_KEYS = "abcdefghijklmnopqrstu"
PERSON_KEYS = "0123456789,./;'[]-=`\\"
PAUSE_S = 0.01


def phase_of(key: str) -> int:
    """AI phase k is 2k, USER phase k is 2k - 1: the log must never go back."""
    if key in AGENT_KEYS:
        return 2 * AGENT_KEYS.index(key)
    return 2 * (PERSON_KEYS.index(key) + 1) - 1


@pytest.mark.timeout(120)
async def test_no_input_crosses_a_handoff_in_either_direction(tmp_path: Path) -> None:
    drain_ms = int(os.environ.get("BATON_TEST_INPUT_DRAIN_MS", "1000"))
    async with full_stack(
        tmp_path, NumberRange(1100, 1109), NumberRange(19300, 19309), input_drain_ms=drain_ms
    ) as stack:
        await run_handoffs(stack)


async def run_handoffs(stack: FullStack) -> None:
    settings = EdgeSettings(
        internal_token=INTERNAL_TOKEN,
        port=0,
        session_address=f"127.0.0.1:{stack.session.port}",
        api_token=OPERATOR_TOKEN,
        jwt_secret=JWT_SECRET,
    )
    other = await start_edge_server(settings, Authenticator(OPERATOR_TOKEN, JWT_SECRET))
    channel = open_channel(f"127.0.0.1:{stack.automation.port}", INTERNAL_TOKEN)
    automation = automation_pb2_grpc.AutomationServiceStub(channel)
    stop = asyncio.Event()
    agent_key = [AGENT_KEYS[0]]
    person_key = [""]
    refused = [0]
    try:
        stack.site.clear()
        created = await stack.request(
            "POST",
            "/api/browser-session",
            ALICE,
            {"task": "open the form", "url": stack.site.form_url},
        )
        session_id = created["id"]
        # No steps and no planner: the agent opens the page and its task ends.
        session = await stack.wait_for_session(
            ALICE, session_id, lambda s: s["task"]["status"] == "COMPLETED"
        )
        centre = (session["viewport"]["width"] // 2, session["viewport"]["height"] // 2)
        url = (await stream_url(stack, ALICE, session_id)).replace(
            f":{stack.edge.port}/", f":{other.port}/"
        )

        async def agent() -> None:
            while not stop.is_set():
                step = automation_pb2.Step(press=automation_pb2.PressAction(key=agent_key[0]))
                try:
                    await automation.Act(
                        automation_pb2.ActRequest(session_id=session_id, step=step)
                    )
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
                    refused[0] += 1
                await asyncio.sleep(PAUSE_S)

        def keys() -> str:
            return stack.site.keys()

        async with raw_viewer(url) as person:

            async def type_forever() -> None:
                while not stop.is_set():
                    if person_key[0]:
                        await person.type(person_key[0])
                    await asyncio.sleep(PAUSE_S)

            workers = [asyncio.create_task(agent()), asyncio.create_task(type_forever())]
            try:
                await within(stack, lambda: AGENT_KEYS[0] in keys(), "the agent typing")
                forwarded_after_resume: list[int] = []
                resumed_at = await forwarded(other.base_url, stack)
                for k in range(1, HANDOFFS + 1):
                    forwarded_after_resume.append(
                        await forwarded(other.base_url, stack) - resumed_at
                    )
                    gated = await forwarded(other.base_url, stack)
                    await control(stack, session_id, "take_control")
                    person_key[0] = PERSON_KEYS[k - 1]
                    # The second edge opens its gate when WatchSession tells it,
                    # a moment later: a click before that is dropped, and without
                    # one the page may not have the keyboard (round 1: the
                    # address bar has it).
                    await gate_opens(other.base_url, stack, gated, k)
                    await person.click(*centre)
                    await within(
                        stack, lambda: keys().count(person_key[0]) >= 3, f"the person in round {k}"
                    )
                    agent_key[0] = AGENT_KEYS[k]
                    await control(stack, session_id, "return_control")
                    # From now on the person types the next USER phase's key.
                    person_key[0] = PERSON_KEYS[k]
                    resumed_at = await forwarded(other.base_url, stack)
                    # The person goes on typing; the agent's next key is the marker.
                    await within(
                        stack, lambda: agent_key[0] in keys(), f"the agent after round {k}"
                    )
                    await asyncio.sleep(0.05)
                # A last stretch of both at once under the agent's control.
                await asyncio.sleep(0.3)
                forwarded_after_resume.append(await forwarded(other.base_url, stack) - resumed_at)
            finally:
                stop.set()
                await asyncio.gather(*workers, return_exceptions=True)
        for worker in workers:
            if worker.done() and not worker.cancelled() and worker.exception():
                raise worker.exception()  # type: ignore[misc]
    finally:
        stop.set()
        await channel.close(None)
        await other.stop()
    log = keys()
    phases = [phase_of(key) for key in log]
    # Every key of an older phase than one already seen, with what is around it.
    late = [
        (i, log[max(0, i - 5) : i + 5]) for i in range(len(log)) if phases[i] < max(phases[: i + 1])
    ]
    agent_during_user = [(i, around) for i, around in late if phases[i] % 2 == 0]
    assert agent_during_user == [], f"the agent acted under USER_CONTROL: {agent_during_user}"
    person_after_agent = [(i, around) for i, around in late if phases[i] % 2 == 1]
    assert person_after_agent == [], (
        f"the person's keys reached the page after the agent's first action: {person_after_agent}"
    )
    assert forwarded_after_resume == [0] * (HANDOFFS + 1)
    # Every phase happened, with keys from both sides, and the agent was refused.
    assert sorted(set(phases)) == list(range(2 * HANDOFFS + 1))
    assert refused[0] > 0


async def within(stack: FullStack, predicate: Callable[[], bool], what: str) -> None:
    try:
        await asyncio.wait_for(stack.site.wait_until(predicate), 10)
    except TimeoutError:
        raise AssertionError(f"no keys from {what} within 10 s: {stack.site.keys()!r}") from None


async def gate_opens(edge_url: str, stack: FullStack, before: int, k: int) -> None:
    """Once the edge forwards the person's input (they type all the time)."""
    deadline = asyncio.get_running_loop().time() + 10
    while await forwarded(edge_url, stack) == before:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the second edge forwarded nothing in round {k} within 10 s")
        await asyncio.sleep(0.02)


async def forwarded(edge_url: str, stack: FullStack) -> int:
    """How many RFB input messages the edge has let through so far (its /metrics)."""
    async with stack.http.get(
        f"{edge_url}/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    ) as answer:
        text = await answer.text()
    line = next(
        line
        for line in text.splitlines()
        if line.startswith('baton_stream_input_messages_total{outcome="forwarded"}')
    )
    return int(float(line.split()[-1]))


async def control(stack: FullStack, session_id: str, action: str) -> None:
    await stack.request(
        "PUT", f"/api/browser-session/{session_id}/control", ALICE, {"action": action}
    )
