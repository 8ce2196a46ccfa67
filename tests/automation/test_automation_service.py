"""AutomationService end to end: real gRPC server, real headful Chromium on a real Xvfb."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from baton.automation.v1 import automation_pb2 as pb
from baton.automation.v1 import automation_pb2_grpc as pb_grpc
from services.automation.page_port import BROWSER_GONE_MESSAGE
from services.automation.proc_table import (
    browser_main_pid,
    list_processes,
    orphan_zombies,
    processes_of_browser,
)
from services.automation.server import start_automation_server
from services.automation.settings import AutomationSettings
from services.runtime.grpc_client import open_channel
from tests.automation.conftest import PAUSE_GRACE_MS, Automation, TaskStream, step_is
from tests.automation.scripted_llm import ScriptedLlm, tool_call_answer
from tests.automation.support import PageServer
from tests.conftest import INTERNAL_TOKEN, eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

STARTED = pb.STEP_STATUS_STARTED
SUCCEEDED = pb.STEP_STATUS_SUCCEEDED
FAILED = pb.STEP_STATUS_FAILED


def fill(selector: str, value: str) -> pb.Step:
    return pb.Step(fill=pb.FillAction(selector=selector, value=value))


def click(selector: str) -> pb.Step:
    return pb.Step(click=pb.ClickAction(selector=selector))


def profile_dirs(root: Path, session_id: str) -> list[Path]:
    return list(root.glob(f"baton-profile-{session_id}-*"))


async def recorded(site: PageServer, kind: str, count: int) -> list[object]:
    """The details of `kind` events once `count` have arrived (the page posts them async)."""
    deadline = time.monotonic() + 10
    while len(events := site.recorder.page_events(kind)) < count:
        assert time.monotonic() < deadline, f"only {events} arrived"
        await asyncio.sleep(0.05)
    return [event["detail"] for event in events]


async def close(automation: Automation, session_id: str) -> None:
    await automation.stub.CloseBrowser(pb.CloseBrowserRequest(session_id=session_id))
    assert profile_dirs(automation.profile_root, session_id) == []


async def test_form_task_runs_six_steps_in_order_and_submits(
    automation: Automation, site: PageServer
) -> None:
    steps = [
        fill("#name", "Ada Lovelace"),
        fill("#email", "ada@example.org"),
        fill("#password", "s3cret-value"),
        pb.Step(select=pb.SelectAction(selector="#colour", value="green")),
        click("#submit"),
        pb.Step(wait_for=pb.WaitForAction(selector="#thanks")),
    ]
    stream = TaskStream.open(
        automation.stub,
        automation.task("form", url=f"{site.base_url}/form", steps=steps, max_steps=10),
    )
    final = await stream.final()

    assert final.status == pb.TASK_STATUS_COMPLETED, final.reason
    assert final.steps_completed == 7  # opening the page, then the six steps
    assert [(s.index, s.status) for s in stream.steps()] == [
        (index, status) for index in range(7) for status in (STARTED, SUCCEEDED)
    ]
    actions = [s.action for s in stream.steps() if s.status == SUCCEEDED]
    assert actions == ["goto", "fill", "fill", "fill", "select", "click", "wait_for"]
    assert site.recorder.submissions == [
        {
            "name": "Ada Lovelace",
            "email": "ada@example.org",
            "password": "s3cret-value",
            "colour": "green",
        }
    ]
    # The password never leaves the service; other values are shown.
    assert all("s3cret" not in str(event) for event in stream.events)
    descriptions = [s.description for s in stream.steps()]
    assert "fill #password with [redacted]" in descriptions
    assert "fill #email with 'ada@example.org'" in descriptions
    assert stream.steps()[-1].url == f"{site.base_url}/submit"
    assert all(s.duration_ms >= 0 for s in stream.steps())
    await close(automation, "form")


async def test_pause_stops_actions_until_resume_and_every_step_runs_once(
    automation: Automation, site: PageServer
) -> None:
    stream = TaskStream.open(
        automation.stub,
        automation.task(
            "pausing", url=f"{site.base_url}/events", steps=[click("#step")] * 20, max_steps=20
        ),
    )
    await stream.wait_for(step_is(5, SUCCEEDED))
    pause = await automation.stub.PauseTask(pb.PauseTaskRequest(session_id="pausing"))
    paused_at_ms = time.time() * 1000
    steps_when_paused = len(stream.steps())
    assert pause.status == pb.TASK_STATUS_RUNNING
    assert not pause.aborted_action

    # The observation window: nothing may touch the page for 3 s.
    await asyncio.sleep(3)
    late = [e for e in site.recorder.page_events() if float(str(e["at"])) > paused_at_ms]
    assert late == []
    assert len(stream.steps()) == steps_when_paused
    # Act is refused while paused.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await automation.stub.Act(pb.ActRequest(session_id="pausing", step=click("#step")))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    resumed = await automation.stub.ResumeTask(pb.ResumeTaskRequest(session_id="pausing"))
    assert resumed.status == pb.TASK_STATUS_RUNNING
    final = await stream.final()

    assert final.status == pb.TASK_STATUS_COMPLETED, final.reason
    assert await recorded(site, "step", 20) == [str(n) for n in range(1, 21)]
    succeeded = [s.index for s in stream.steps() if s.status == SUCCEEDED]
    assert succeeded == list(range(21))
    await close(automation, "pausing")


async def test_pause_during_a_long_action_aborts_it_after_the_grace(
    automation: Automation, site: PageServer
) -> None:
    never = pb.Step(wait_for=pb.WaitForAction(selector="#never"), timeout_ms=45000)
    stream = TaskStream.open(
        automation.stub,
        automation.task("long", url=f"{site.base_url}/events", steps=[never], max_steps=5),
    )
    await stream.wait_for(step_is(1, STARTED))
    began = time.monotonic()
    pause = await automation.stub.PauseTask(pb.PauseTaskRequest(session_id="long"))
    took = time.monotonic() - began

    assert pause.aborted_action
    # Without the abort it would have waited for the action's 45 s timeout.
    assert took < 15, f"pause took {took:.1f} s with a grace of {PAUSE_GRACE_MS} ms"
    aborted = await stream.wait_for(step_is(1, pb.STEP_STATUS_INTERRUPTED))
    assert "aborted" in aborted.step.error

    cancel = await automation.stub.CancelTask(pb.CancelTaskRequest(session_id="long"))
    assert cancel.status == pb.TASK_STATUS_CANCELLED
    final = await stream.final()
    assert final.status == pb.TASK_STATUS_CANCELLED
    # The browser stays for the person.
    state = await automation.stub.GetPageState(pb.GetPageStateRequest(session_id="long"))
    assert state.url == f"{site.base_url}/events"
    assert 'button "Step"' in state.aria_snapshot
    assert state.task_status == pb.TASK_STATUS_CANCELLED
    await close(automation, "long")


async def test_an_aborted_click_does_not_happen_later(
    automation: Automation, site: PageServer
) -> None:
    # The button appears 1.5 s after the page: the click waits for it, the pause
    # aborts it after the grace, and the browser must not click once it appears.
    late_click = pb.Step(click=pb.ClickAction(selector="#late"), timeout_ms=45000)
    stream = TaskStream.open(
        automation.stub,
        automation.task("late", url=f"{site.base_url}/events?late=1500", steps=[late_click]),
    )
    await stream.wait_for(step_is(1, STARTED))
    pause = await automation.stub.PauseTask(pb.PauseTaskRequest(session_id="late"))
    assert pause.aborted_action
    assert await recorded(site, "appeared", 1) == ["late"]
    await asyncio.sleep(1)  # the window in which a still-pending click would land
    assert site.recorder.page_events("click") == []

    await automation.stub.ResumeTask(pb.ResumeTaskRequest(session_id="late"))
    final = await stream.final()
    assert final.status == pb.TASK_STATUS_COMPLETED, final.reason
    assert await recorded(site, "click", 1) == ["late"]  # once, after the resume
    await close(automation, "late")


async def test_request_user_waits_for_the_person_then_resumes(
    automation: Automation, site: PageServer
) -> None:
    steps = [pb.Step(request_user=pb.RequestUserAction(reason="check the order")), click("#step")]
    stream = TaskStream.open(
        automation.stub,
        automation.task("handover", url=f"{site.base_url}/events", steps=steps, max_steps=5),
    )
    asked = await stream.wait_for(lambda e: e.HasField("user_requested"))
    assert asked.user_requested.reason == "check the order"
    assert asked.user_requested.url == f"{site.base_url}/events"
    await stream.wait_for(
        lambda e: (
            e.HasField("status_changed")
            and e.status_changed.status == pb.TASK_STATUS_WAITING_FOR_USER
        )
    )
    # The session service pauses while the person has control, then resumes.
    pause = await automation.stub.PauseTask(pb.PauseTaskRequest(session_id="handover"))
    assert pause.status == pb.TASK_STATUS_WAITING_FOR_USER
    assert site.recorder.page_events("step") == []
    await automation.stub.ResumeTask(pb.ResumeTaskRequest(session_id="handover"))

    final = await stream.final()
    assert final.status == pb.TASK_STATUS_COMPLETED, final.reason
    assert await recorded(site, "step", 1) == ["1"]
    await close(automation, "handover")


async def test_a_task_outlives_its_stream_and_attach_task_reads_on(
    automation: Automation, site: PageServer
) -> None:
    """A session service replica dies mid-task: the task goes on in automation and
    another follower reads on after the last event it had, nothing twice."""
    steps = [pb.Step(request_user=pb.RequestUserAction(reason="log in")), click("#step")]
    stream = TaskStream.open(
        automation.stub,
        automation.task("attach", url=f"{site.base_url}/events", steps=steps, max_steps=5),
    )
    asked = await stream.wait_for(lambda e: e.HasField("user_requested"))
    assert stream.reader is not None
    stream.reader.cancel()  # the follower goes away
    seen = [e.seq for e in stream.events]
    assert seen == list(range(1, len(seen) + 1)), seen
    # The task goes on: the person's resume lets the agent click.
    await automation.stub.PauseTask(pb.PauseTaskRequest(session_id="attach"))
    await automation.stub.ResumeTask(pb.ResumeTaskRequest(session_id="attach"))
    assert await recorded(site, "step", 1) == ["1"]
    attached = [
        reply.event
        async for reply in automation.stub.AttachTask(
            pb.AttachTaskRequest(session_id="attach", after_seq=asked.seq)
        )
    ]
    assert [e.seq for e in attached] == list(range(asked.seq + 1, asked.seq + 1 + len(attached)))
    assert attached[-1].status_changed.status == pb.TASK_STATUS_COMPLETED
    clicks = [e for e in attached if e.step.action == "click" and e.step.status == SUCCEEDED]
    assert len(clicks) == 1
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await anext(aiter(automation.stub.AttachTask(pb.AttachTaskRequest(session_id="nobody"))))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    await close(automation, "attach")


async def test_explicit_steps_run_past_an_empty_password_field(
    automation: Automation, site: PageServer
) -> None:
    """Explicit steps are a contract (issue 13, part 2): no hand-over unasked."""
    stream = TaskStream.open(
        automation.stub,
        automation.task(
            "steps-login", url=f"{site.base_url}/login", steps=[fill("#user", "ada")], max_steps=5
        ),
    )
    final = await stream.final()
    assert final.status == pb.TASK_STATUS_COMPLETED, final.reason
    assert not [e for e in stream.events if e.HasField("user_requested")]
    assert [(s.action, s.status) for s in stream.steps() if s.index == 1][-1] == ("fill", SUCCEEDED)
    await close(automation, "steps-login")


async def test_an_empty_password_field_asks_for_a_person_when_the_caller_says_so(
    automation: Automation, site: PageServer
) -> None:
    stream = TaskStream.open(
        automation.stub,
        automation.task(
            "login",
            url=f"{site.base_url}/login",
            steps=[fill("#user", "ada")],
            max_steps=5,
            hand_over=pb.HandOver(on_password_field=True),
        ),
    )
    asked = await stream.wait_for(lambda e: e.HasField("user_requested"))
    assert asked.user_requested.reason == (
        "the page asks for a password the agent does not have: please sign in"
    )
    assert not [s for s in stream.steps() if s.index == 1]
    await automation.stub.ResumeTask(pb.ResumeTaskRequest(session_id="login"))
    final = await stream.final()
    assert final.status == pb.TASK_STATUS_COMPLETED, final.reason
    await close(automation, "login")


async def test_a_captcha_frame_asks_for_a_person_then_the_task_goes_on(
    automation: Automation, site: PageServer
) -> None:
    stream = TaskStream.open(
        automation.stub,
        automation.task("captcha", url=f"{site.base_url}/captcha", steps=[click("#buy")]),
    )
    asked = await stream.wait_for(lambda e: e.HasField("user_requested"))
    assert "hCaptcha" in asked.user_requested.reason
    assert not [s for s in stream.steps() if s.index == 1]
    await automation.stub.ResumeTask(pb.ResumeTaskRequest(session_id="captcha"))
    final = await stream.final()
    assert final.status == pb.TASK_STATUS_COMPLETED, final.reason
    assert [s.action for s in stream.steps() if s.status == SUCCEEDED] == ["goto", "click"]
    await close(automation, "captcha")


async def test_the_llm_planner_stops_at_an_empty_password_field_by_default(
    automation: Automation, site: PageServer, llm: ScriptedLlm
) -> None:
    llm.script([])
    stream = TaskStream.open(
        automation.stub,
        automation.task(
            "llm-login",
            url=f"{site.base_url}/login",
            task_text="Sign in",
            max_steps=5,
            planner=pb.PLANNER_LLM,
        ),
    )
    asked = await stream.wait_for(lambda e: e.HasField("user_requested"))
    assert "asks for a password" in asked.user_requested.reason
    # The model was not asked anything before the person was.
    assert not llm.requests
    await automation.stub.CancelTask(pb.CancelTaskRequest(session_id="llm-login"))
    await close(automation, "llm-login")


async def test_llm_planner_completes_a_three_action_task(
    automation: Automation, site: PageServer, llm: ScriptedLlm
) -> None:
    llm.script(
        [
            tool_call_answer("call-1", "fill", {"selector": "#guest", "value": "Ada"}),
            tool_call_answer("call-2", "click", {"selector": 'role=button[name="Sign"]'}),
            tool_call_answer("call-3", "extract", {"selector": "#message"}),
            tool_call_answer("call-4", "finish", {"success": True, "answer": "Signed by Ada"}),
        ]
    )
    stream = TaskStream.open(
        automation.stub,
        automation.task(
            "llm",
            url=f"{site.base_url}/guestbook",
            task_text="Sign the guestbook as Ada and tell me the message",
            max_steps=10,
            planner=pb.PLANNER_LLM,
        ),
    )
    final = await stream.final()

    assert final.status == pb.TASK_STATUS_COMPLETED, final.reason
    assert final.reason == "Signed by Ada"
    done = [s for s in stream.steps() if s.status == SUCCEEDED]
    assert [(s.index, s.action) for s in done] == [
        (0, "goto"),
        (1, "fill"),
        (2, "click"),
        (3, "extract"),
    ]
    assert done[-1].result == "Signed by Ada"
    assert await recorded(site, "signed", 1) == ["Ada"]
    # The model saw the task and the page, and got each outcome back.
    assert len(llm.requests) == 4
    assert llm.authorizations == ["Bearer test-key"] * 4
    first = llm.requests[0]
    assert first["model"] == "scripted-model"
    assert {tool["function"]["name"] for tool in first["tools"]} >= {"click", "fill", "finish"}
    page_view = first["messages"][-1]["content"]
    assert f"URL: {site.base_url}/guestbook" in page_view
    assert 'button "Sign"' in page_view
    tool_replies = [m for m in llm.requests[3]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_replies] == ["call-1", "call-2", "call-3"]
    assert tool_replies[-1]["content"] == "succeeded: Signed by Ada"
    await close(automation, "llm")


async def test_killing_chromium_fails_the_task_and_leaves_nothing_behind(
    automation: Automation, site: PageServer
) -> None:
    never = pb.Step(wait_for=pb.WaitForAction(selector="#never"), timeout_ms=45000)
    stream = TaskStream.open(
        automation.stub,
        automation.task("crash", url=f"{site.base_url}/events", steps=[never], max_steps=5),
    )
    await stream.wait_for(step_is(1, STARTED))
    [profile] = profile_dirs(automation.profile_root, "crash")
    pid = browser_main_pid(list_processes(), profile)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    failed_step = await stream.wait_for(step_is(1, FAILED))
    assert failed_step.step.error == BROWSER_GONE_MESSAGE
    final = await stream.final()
    assert final.status == pb.TASK_STATUS_FAILED
    assert final.reason == BROWSER_GONE_MESSAGE

    assert processes_of_browser(list_processes(), pid, profile) == []
    assert not profile.exists()
    # Helpers that outlived the browser (crash handlers) are reaped too.
    await eventually(
        lambda: not list(orphan_zombies(list_processes(), os.getpid(), os.getpgrp())), 10
    )
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await automation.stub.GetPageState(pb.GetPageStateRequest(session_id="crash"))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_max_steps_stops_the_task_with_a_reason(
    automation: Automation, site: PageServer
) -> None:
    stream = TaskStream.open(
        automation.stub,
        automation.task(
            "limited", url=f"{site.base_url}/events", steps=[click("#step")] * 4, max_steps=2
        ),
    )
    final = await stream.final()
    assert final.status == pb.TASK_STATUS_FAILED
    assert "maxSteps=2" in final.reason
    assert await recorded(site, "step", 2) == ["1", "2"]
    assert {s.index for s in stream.steps()} == {0, 1, 2}
    await close(automation, "limited")


async def test_no_planner_opens_the_page_and_leaves_it_to_the_person(
    automation: Automation, site: PageServer
) -> None:
    stream = TaskStream.open(
        automation.stub,
        automation.task("idle", url=f"{site.base_url}/form", planner=pb.PLANNER_NONE),
    )
    final = await stream.final()
    assert final.status == pb.TASK_STATUS_COMPLETED
    note = stream.steps()[-1]
    assert "no planner is configured" in note.description
    state = await automation.stub.GetPageState(
        pb.GetPageStateRequest(session_id="idle", include_screenshot=True)
    )
    assert state.url == f"{site.base_url}/form"
    assert state.screenshot_png.startswith(b"\x89PNG")
    # An external agent can still act through Act.
    acted = await automation.stub.Act(pb.ActRequest(session_id="idle", step=fill("#name", "Bo")))
    assert acted.event.status == SUCCEEDED
    assert acted.event.description == "fill #name with 'Bo'"
    # Typing is shown too, unless it goes into a password field.
    await automation.stub.Act(pb.ActRequest(session_id="idle", step=click("#password")))
    typed = await automation.stub.Act(
        pb.ActRequest(session_id="idle", step=pb.Step(type=pb.TypeAction(text="topsecret")))
    )
    assert typed.event.description == "type [redacted]"
    await automation.stub.Act(pb.ActRequest(session_id="idle", step=click("#name")))
    typed = await automation.stub.Act(
        pb.ActRequest(session_id="idle", step=pb.Step(type=pb.TypeAction(text="!")))
    )
    assert typed.event.description == "type '!'"
    await close(automation, "idle")


async def test_a_refused_connection_is_a_failed_step_not_a_service_error(
    automation: Automation, site: PageServer
) -> None:
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/"
    stream = TaskStream.open(automation.stub, automation.task("refused", url=url))
    final = await stream.final()
    assert final.status == pb.TASK_STATUS_FAILED
    failed = [s for s in stream.steps() if s.status == FAILED]
    assert failed and "ERR_CONNECTION_REFUSED" in failed[0].error
    assert url in final.reason
    await close(automation, "refused")


async def test_stopping_the_server_closes_every_browser(
    display: str, site: PageServer, tmp_path: Path
) -> None:
    running = await start_automation_server(
        AutomationSettings(internal_token=INTERNAL_TOKEN, profile_root=tmp_path)
    )
    channel = open_channel(f"127.0.0.1:{running.port}", INTERNAL_TOKEN)
    stub = pb_grpc.AutomationServiceStub(channel)
    request = pb.StartTaskRequest(
        session_id="shutdown",
        display=display,
        url=f"{site.base_url}/events",
        steps=[pb.Step(request_user=pb.RequestUserAction(reason="hold"))],
    )
    stream = TaskStream.open(stub, request)
    await stream.wait_for(lambda e: e.HasField("user_requested"))
    [profile] = profile_dirs(tmp_path, "shutdown")
    pid = browser_main_pid(list_processes(), profile)
    assert pid is not None

    await running.stop(grace=0.5)
    await channel.close(grace=None)
    if stream.reader is not None:
        await asyncio.gather(stream.reader, return_exceptions=True)

    assert processes_of_browser(list_processes(), pid, profile) == []
    assert not profile.exists()
