"""AutomationService over gRPC: protobuf <-> domain conversion only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from baton.automation.v1 import automation_pb2 as pb
from baton.automation.v1 import automation_pb2_grpc as pb_grpc
from baton.display.v1 import display_pb2
from services.automation.browser_prewarm import WarmBrowser
from services.automation.browser_sessions import (
    BrowserSessions,
    PlannerChoice,
    TaskRequest,
)
from services.automation.cdp_gate import GateEvent, Message, cdp_stream
from services.automation.handback import HandbackReport
from services.automation.steps import (
    Action,
    Click,
    Extract,
    Fill,
    Goto,
    Press,
    RequestUser,
    Screenshot,
    Scroll,
    Select,
    StatusChanged,
    Step,
    StepEvent,
    StepStatus,
    TaskEvent,
    TaskStatus,
    Type,
    UnsafeUrl,
    UserRequested,
    Wait,
    WaitFor,
    check_navigable,
)
from services.runtime.errors import InvalidArgument
from services.runtime.handback_view import CONTROL_RETURNED_METHOD, handback_json
from services.runtime.opened_stream import opened

Context = grpc.aio.ServicerContext[Any, Any]

_GATE_ACTION: dict[str, pb.CdpGateAction.ValueType] = {
    "held": pb.CDP_GATE_ACTION_HELD,
    "released": pb.CDP_GATE_ACTION_RELEASED,
    "rejected": pb.CDP_GATE_ACTION_REJECTED,
}

DEFAULT_WIDTH = 1280
DEFAULT_HEIGHT = 720

_TASK_STATUS: dict[TaskStatus, pb.TaskStatus.ValueType] = {
    TaskStatus.PENDING: pb.TASK_STATUS_PENDING,
    TaskStatus.RUNNING: pb.TASK_STATUS_RUNNING,
    TaskStatus.WAITING_FOR_USER: pb.TASK_STATUS_WAITING_FOR_USER,
    TaskStatus.COMPLETED: pb.TASK_STATUS_COMPLETED,
    TaskStatus.FAILED: pb.TASK_STATUS_FAILED,
    TaskStatus.CANCELLED: pb.TASK_STATUS_CANCELLED,
}

_STEP_STATUS: dict[StepStatus, pb.StepStatus.ValueType] = {
    StepStatus.STARTED: pb.STEP_STATUS_STARTED,
    StepStatus.SUCCEEDED: pb.STEP_STATUS_SUCCEEDED,
    StepStatus.FAILED: pb.STEP_STATUS_FAILED,
    StepStatus.INTERRUPTED: pb.STEP_STATUS_INTERRUPTED,
}

_PLANNER: dict[pb.Planner.ValueType, PlannerChoice] = {
    pb.PLANNER_UNSPECIFIED: PlannerChoice.AUTO,
    pb.PLANNER_STEPS: PlannerChoice.STEPS,
    pb.PLANNER_LLM: PlannerChoice.LLM,
    pb.PLANNER_NONE: PlannerChoice.NONE,
    pb.PLANNER_EXTERNAL: PlannerChoice.EXTERNAL,
}


def action_from_proto(step: pb.Step) -> Action:
    kind = step.WhichOneof("action")
    match kind:
        case "goto":
            return Goto(_navigable(step.goto.url))
        case "click":
            return Click(step.click.selector)
        case "fill":
            return Fill(step.fill.selector, step.fill.value)
        case "type":
            return Type(step.type.text)
        case "press":
            return Press(step.press.key)
        case "select":
            return Select(step.select.selector, step.select.value)
        case "scroll":
            return Scroll(step.scroll.dx, step.scroll.dy)
        case "wait":
            if step.wait.ms < 0:
                raise InvalidArgument("wait.ms must not be negative")
            return Wait(step.wait.ms)
        case "wait_for":
            return WaitFor(step.wait_for.selector)
        case "extract":
            return Extract(step.extract.selector)
        case "screenshot":
            return Screenshot()
        case "request_user":
            wanted = step.request_user
            return RequestUser(
                wanted.reason, wanted.auto_return if wanted.HasField("auto_return") else None
            )
    raise InvalidArgument("a step needs an action (goto, click, fill, ...)")


def _navigable(url: str) -> str:
    try:
        return check_navigable(url)
    except UnsafeUrl as error:
        raise InvalidArgument(str(error)) from None


def step_from_proto(step: pb.Step) -> Step:
    action = action_from_proto(step)
    for name in ("selector", "url", "key"):
        if getattr(action, name, None) == "":
            raise InvalidArgument(f"{type(action).__name__.lower()} step needs a {name}")
    return Step(
        action=action,
        allow_failure=step.allow_failure,
        timeout_ms=step.timeout_ms if step.timeout_ms > 0 else None,
    )


def task_status_to_proto(status: TaskStatus | None) -> pb.TaskStatus.ValueType:
    return pb.TASK_STATUS_UNSPECIFIED if status is None else _TASK_STATUS[status]


def handback_to_proto(report: HandbackReport) -> pb.Handback:
    return pb.Handback(
        url_before=report.url_before,
        title_before=report.title_before,
        url_after=report.url_after,
        title_after=report.title_after,
        navigations=report.navigations,
        fields_typed=[
            pb.TypedField(label=f.label, selector=f.selector, url=f.url)
            for f in report.fields_typed
        ],
        cookies_changed=[
            pb.NameChange(name=c.name, domain=c.domain, change=c.change)
            for c in report.cookies_changed
        ],
        storage_changed=[
            pb.NameChange(name=c.name, domain=c.domain, change=c.change, area=c.area)
            for c in report.storage_changed
        ],
        downloads=[pb.Download(file_name=d.file_name, url=d.url) for d in report.downloads],
        held_seconds=report.held_seconds,
    )


def step_event_to_proto(event: StepEvent) -> pb.StepEvent:
    now = Timestamp()
    now.GetCurrentTime()
    return pb.StepEvent(
        handback=handback_to_proto(event.handback) if event.handback else None,
        index=event.index,
        action=event.action,
        status=_STEP_STATUS[event.status],
        description=event.description,
        url=event.url,
        duration_ms=event.duration_ms,
        error=event.error,
        result=event.result,
        time=now,
    )


def event_to_proto(seq: int, event: TaskEvent) -> pb.StartTaskResponse:
    match event:
        case StepEvent():
            return pb.StartTaskResponse(seq=seq, step=step_event_to_proto(event))
        case StatusChanged(status, reason, steps_completed):
            return pb.StartTaskResponse(
                seq=seq,
                status_changed=pb.TaskStatusChanged(
                    status=_TASK_STATUS[status],
                    reason=reason,
                    steps_completed=steps_completed,
                ),
            )
        case UserRequested(reason, url, auto_return):
            return pb.StartTaskResponse(
                seq=seq,
                user_requested=pb.UserRequested(reason=reason, url=url, auto_return=auto_return),
            )


def task_request_from_proto(request: pb.StartTaskRequest) -> TaskRequest:
    viewport = request.viewport
    return TaskRequest(
        session_id=request.session_id,
        display=request.display,
        width=viewport.width or DEFAULT_WIDTH,
        height=viewport.height or DEFAULT_HEIGHT,
        task_text=request.task_text,
        url=_navigable(request.url) if request.url else "",
        max_steps=request.max_steps,
        steps=[step_from_proto(step) for step in request.steps],
        planner=_PLANNER.get(request.planner, PlannerChoice.AUTO),
        xauthority=request.xauthority,
        on_password_field=(
            request.hand_over.on_password_field
            if request.hand_over.HasField("on_password_field")
            else None
        ),
    )


def warm_browser_to_proto(browser: WarmBrowser) -> pb.WarmBrowser:
    return pb.WarmBrowser(
        slot_id=browser.slot_id,
        display=browser.display,
        viewport=display_pb2.Viewport(width=browser.width, height=browser.height),
        pid=browser.pid or 0,
    )


class AutomationServicer(pb_grpc.AutomationServiceServicer):
    def __init__(
        self,
        sessions: BrowserSessions,
        warm_browsers: Callable[[], list[WarmBrowser]] = list,
    ) -> None:
        self._sessions = sessions
        self._warm_browsers = warm_browsers

    async def StartTask(
        self, request: pb.StartTaskRequest, context: Context
    ) -> AsyncIterator[pb.StartTaskResponse]:
        events = self._sessions.start_task(task_request_from_proto(request))
        try:
            async for seq, event in events:
                yield event_to_proto(seq, event)
        finally:
            await events.aclose()

    async def AttachTask(
        self, request: pb.AttachTaskRequest, context: Context
    ) -> AsyncIterator[pb.AttachTaskResponse]:
        events = self._sessions.attach_task(request.session_id, request.after_seq)
        try:
            async for seq, event in events:
                yield pb.AttachTaskResponse(event=event_to_proto(seq, event))
        finally:
            await events.aclose()

    async def PauseTask(
        self, request: pb.PauseTaskRequest, context: Context
    ) -> pb.PauseTaskResponse:
        status, aborted = await self._sessions.pause(request.session_id)
        return pb.PauseTaskResponse(status=task_status_to_proto(status), aborted_action=aborted)

    async def ResumeTask(
        self, request: pb.ResumeTaskRequest, context: Context
    ) -> pb.ResumeTaskResponse:
        status = self._sessions.resume(request.session_id)
        return pb.ResumeTaskResponse(status=task_status_to_proto(status))

    async def TakeHandback(
        self, request: pb.TakeHandbackRequest, context: Context
    ) -> pb.TakeHandbackResponse:
        report = await self._sessions.take_handback(request.session_id)
        return pb.TakeHandbackResponse(handback=handback_to_proto(report))

    async def CancelTask(
        self, request: pb.CancelTaskRequest, context: Context
    ) -> pb.CancelTaskResponse:
        status = await self._sessions.cancel(request.session_id)
        return pb.CancelTaskResponse(status=task_status_to_proto(status))

    async def Cdp(
        self, request_iterator: AsyncIterator[pb.CdpRequest], context: Context
    ) -> AsyncIterator[pb.CdpResponse]:
        opening, commands = await opened(request_iterator)
        pipe, gate = await self._sessions.cdp_target(opening.session_id)
        returns: asyncio.Queue[HandbackReport] = asyncio.Queue()
        forget = self._sessions.listen_handbacks(opening.session_id, returns.put_nowait)

        async def notices() -> AsyncIterator[Message]:
            # The external agent hears what the person did as control returns to it.
            while True:
                report = await returns.get()
                handback = handback_json(handback_to_proto(report))
                yield {"method": CONTROL_RETURNED_METHOD, "params": {"handback": handback}}

        stream = cdp_stream(pipe, gate, opening.reject_on_user_control, commands, notices())
        try:
            async for item in stream:
                if isinstance(item, GateEvent):
                    event = pb.CdpGateEvent(
                        action=_GATE_ACTION[item.action], held_seconds=item.held_seconds
                    )
                    yield pb.CdpResponse(gate=event)
                else:
                    yield pb.CdpResponse(message=item)
        finally:
            forget()

    async def Act(self, request: pb.ActRequest, context: Context) -> pb.ActResponse:
        event = await self._sessions.act(request.session_id, step_from_proto(request.step))
        return pb.ActResponse(event=step_event_to_proto(event))

    async def GetPageState(
        self, request: pb.GetPageStateRequest, context: Context
    ) -> pb.GetPageStateResponse:
        state = await self._sessions.page_state(request.session_id, request.include_screenshot)
        return pb.GetPageStateResponse(
            url=state.url,
            title=state.title,
            aria_snapshot=state.aria_snapshot,
            screenshot_png=state.screenshot_png,
            task_status=task_status_to_proto(state.task_status),
        )

    async def ProbePage(
        self, request: pb.ProbePageRequest, context: Context
    ) -> pb.ProbePageResponse:
        url, found = await self._sessions.probe_page(request.session_id, request.selector)
        return pb.ProbePageResponse(url=url, selector_found=found)

    async def CloseBrowser(
        self, request: pb.CloseBrowserRequest, context: Context
    ) -> pb.CloseBrowserResponse:
        await self._sessions.close_browser(request.session_id)
        return pb.CloseBrowserResponse()

    async def ListBrowsers(
        self, request: pb.ListBrowsersRequest, context: Context
    ) -> pb.ListBrowsersResponse:
        return pb.ListBrowsersResponse(session_ids=self._sessions.with_browser())

    async def ListWarmBrowsers(
        self, request: pb.ListWarmBrowsersRequest, context: Context
    ) -> pb.ListWarmBrowsersResponse:
        return pb.ListWarmBrowsersResponse(
            browsers=[warm_browser_to_proto(b) for b in self._warm_browsers()]
        )
