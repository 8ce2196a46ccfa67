"""BrowserSessions: each session's browser, action gate and task.

The servicer calls these; they speak the domain (steps.py), not protobuf.
One task per session at a time; the browser outlives tasks (the person keeps
it) until CloseBrowser, a crash, or shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from services.automation.action_gate import ActionAborted, ActionGate, GateClosed
from services.automation.cdp_hub import BrowserPipe
from services.automation.handback import (
    HandbackReport,
    PageSnapshot,
    WatchNotes,
    build_report,
    person_urls,
)
from services.automation.page_port import (
    BROWSER_GONE_MESSAGE,
    ActionFailed,
    BrowserGone,
    BrowserLauncher,
    ManagedBrowser,
    describe_on_page,
)
from services.automation.planners import ExternalAgent, NoPlanner, Planner, StepsPlanner
from services.automation.settings import AutomationSettings
from services.automation.steps import (
    RequestUser,
    StatusChanged,
    Step,
    StepEvent,
    StepStatus,
    TaskEvent,
    TaskStatus,
    action_name,
)
from services.automation.task_log import TaskLog
from services.automation.task_runner import StepRunner, TaskSpec
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)

# Builds the LLM planner for a task text; None when no LLM is configured.
LlmPlannerFactory = Callable[[str], Planner] | None
# An external CDP client arriving with its session (services/automation/README.md,
# "CDP"): how long its StartTask may take to arrive, and its browser to open.
CDP_UNKNOWN_WAIT_S = 1.0
CDP_LAUNCH_WAIT_S = 60.0
# How long a pause waits to read the page for the hand-back report.
WATCH_START_S = 3.0


class PrewarmedBrowsers(Protocol):
    """Browsers started ahead on warm displays (browser_prewarm.py)."""

    async def take(self, display: str, width: int, height: int) -> ManagedBrowser | None:
        """The display's pre-warmed browser of that size, now the caller's, or None."""
        ...


class PlannerChoice(enum.Enum):
    # Explicit steps when given, else the LLM when configured, else none.
    AUTO = "auto"
    STEPS = "steps"
    LLM = "llm"
    NONE = "none"
    EXTERNAL = "external"


def hand_over_on_password_field(choice: PlannerChoice, asked: bool | None) -> bool:
    """Whether the task stops for a person at an empty password field: as the
    caller asked, else only for the LLM planner. Explicit steps are a contract
    (README.md, "Explicit steps"): they run unless the caller asked otherwise."""
    if asked is not None:
        return asked
    return choice is PlannerChoice.LLM


@dataclass(frozen=True)
class TaskRequest:
    session_id: str
    display: str
    width: int
    height: int
    task_text: str
    url: str
    max_steps: int
    steps: list[Step]
    planner: PlannerChoice = PlannerChoice.AUTO
    # The display's Xauthority file (display slot's `xauthority`).
    xauthority: str = ""
    # Stop for a person at an empty password field the planner will not fill;
    # None: the planner's default (hand_over_on_password_field).
    on_password_field: bool | None = None


@dataclass(frozen=True)
class PageState:
    url: str
    title: str
    aria_snapshot: str
    screenshot_png: bytes
    task_status: TaskStatus | None


@dataclass
class _Watch:
    """A person's time in control, watched from PauseTask to ResumeTask (handback.py)."""

    started: float
    before: PageSnapshot
    notes: WatchNotes
    # The last report TakeHandback made: what ResumeTask hands the agent.
    report: HandbackReport | None = None


# Told of every hand-back report as control returns (external CDP clients).
HandbackListener = Callable[[HandbackReport], None]


@dataclass
class _RunningTask:
    runner: StepRunner
    job: asyncio.Task[None]
    log: TaskLog


@dataclass
class _Session:
    session_id: str
    browser: ManagedBrowser
    gate: ActionGate
    task: _RunningTask | None = None
    last_status: TaskStatus | None = None
    _disposal: asyncio.Task[None] | None = field(default=None, repr=False)
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    async def dispose(self) -> None:
        """Close the browser once, however many callers ask."""
        if self._disposal is None:
            self._disposal = asyncio.ensure_future(self.browser.close())
        await asyncio.shield(self._disposal)


class BrowserSessions:
    def __init__(
        self,
        settings: AutomationSettings,
        launcher: BrowserLauncher,
        llm_planner: LlmPlannerFactory,
        prewarmed: PrewarmedBrowsers | None = None,
    ) -> None:
        self._settings = settings
        self._launcher = launcher
        self._prewarmed = prewarmed
        # Displays a browser is being launched (or adopted) on, with how many.
        self._opening_on: dict[str, int] = {}
        self._llm_planner = llm_planner
        self._sessions: dict[str, _Session] = {}
        # Pause state belongs to the session, not its browser: it exists from
        # the first StartTask (so a pause during the launch holds) until
        # CloseBrowser, and survives a browser crash.
        self._gates: dict[str, ActionGate] = {}
        self._launching: dict[str, asyncio.Lock] = {}
        self._watches: dict[str, _Watch] = {}
        self._handback_listeners: dict[str, set[HandbackListener]] = {}

    def _get(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise NotFound(f"no browser for session {session_id!r}: StartTask opens one")
        return session

    def _choice(self, request: TaskRequest) -> PlannerChoice:
        if request.planner is not PlannerChoice.AUTO:
            return request.planner
        if request.steps:
            return PlannerChoice.STEPS
        if self._llm_planner is not None and request.task_text:
            return PlannerChoice.LLM
        return PlannerChoice.NONE

    def _planner_for(self, request: TaskRequest) -> Planner:
        choice = self._choice(request)
        if choice is PlannerChoice.STEPS:
            return StepsPlanner(list(request.steps))
        if choice is PlannerChoice.LLM:
            if self._llm_planner is None:
                raise FailedPrecondition(
                    "the llm planner is not configured: set BATON_LLM_BASE_URL and BATON_LLM_MODEL"
                )
            if not request.task_text:
                raise InvalidArgument("the llm planner needs a task text")
            return self._llm_planner(request.task_text)
        if choice is PlannerChoice.EXTERNAL:
            return ExternalAgent()
        return NoPlanner()

    def _validate(self, request: TaskRequest) -> None:
        if not request.session_id:
            raise InvalidArgument("session_id is required")
        if request.max_steps < 0:
            raise InvalidArgument("max_steps must not be negative")
        if request.width <= 0 or request.height <= 0:
            raise InvalidArgument("viewport width and height must be positive")
        for step in request.steps:
            if step.timeout_ms is not None and step.timeout_ms < 0:
                raise InvalidArgument("a step's timeout_ms must not be negative")

    async def _browser_for(self, request: TaskRequest, gate: ActionGate) -> _Session:
        lock = self._launching.setdefault(request.session_id, asyncio.Lock())
        async with lock:
            session = self._sessions.get(request.session_id)
            if session is not None and (
                session.browser.display != request.display or not session.browser.alive()
            ):
                await self._discard(session)
                session = None
            if session is None:
                browser = await self._open_browser(request)
                session = _Session(request.session_id, browser, gate)
                session.watcher = asyncio.ensure_future(self._watch(session))
                self._sessions[request.session_id] = session
            return session

    async def _open_browser(self, request: TaskRequest) -> ManagedBrowser:
        """The display's pre-warmed browser when there is one of the right size, else a new one."""
        display = request.display
        self._opening_on[display] = self._opening_on.get(display, 0) + 1
        try:
            browser = None
            if self._prewarmed is not None:
                browser = await self._prewarmed.take(display, request.width, request.height)
            if browser is None:
                browser = await self._launcher.launch(
                    request.session_id, display, request.width, request.height, request.xauthority
                )
            return browser
        finally:
            self._opening_on[display] -= 1
            if not self._opening_on[display]:
                del self._opening_on[display]

    def uses_display(self, display: str) -> bool:
        """Whether a session's browser is on the display or being opened there."""
        if display in self._opening_on:
            return True
        # A browser that died with its slot's X server (released before
        # CloseBrowser) does not count: a new warm slot may be on that number now.
        return any(
            s.browser.display == display and s.browser.alive() for s in self._sessions.values()
        )

    def _gate(self, session_id: str) -> ActionGate:
        gate = self._gates.get(session_id)
        if gate is None:
            gate = self._gates[session_id] = ActionGate(
                self._settings.pause_grace_ms / 1000, lambda: self._drain_input(session_id)
            )
        return gate

    async def _drain_input(self, session_id: str) -> None:
        """Before the first action after a pause: the person's input reaches the page first."""
        timeout_ms = self._settings.input_drain_ms
        session = self._sessions.get(session_id)
        if session is None or timeout_ms <= 0 or not session.browser.alive():
            return
        try:
            outcome = await session.browser.drain_input(timeout_ms / 1000)
        except (BrowserGone, ActionFailed) as error:
            log.warning("session %s: input drain skipped: %s", session_id, error)
            return
        if outcome.drained:
            log.info("session %s: input drained in %.0f ms", session_id, outcome.elapsed_ms)
        else:
            log.warning(
                "session %s: input not drained (%s) after %.0f ms; the agent goes on",
                session_id,
                outcome.reason,
                outcome.elapsed_ms,
            )

    def _known_gate(self, session_id: str) -> ActionGate:
        gate = self._gates.get(session_id)
        if gate is None:
            raise NotFound(f"no session {session_id!r} here: StartTask opens one")
        return gate

    async def _watch(self, session: _Session) -> None:
        """Clean up a browser that died while no task was there to notice."""
        await session.browser.gone.wait()
        if session.task is None or session.task.runner.finished:
            log.warning("Chromium of session %s exited", session.session_id)
            await self._discard(session)

    async def _discard(self, session: _Session) -> None:
        if self._sessions.get(session.session_id) is session:
            del self._sessions[session.session_id]
        if session.watcher is not None and session.watcher is not asyncio.current_task():
            session.watcher.cancel()
        if session.task is not None:
            await session.task.log.close()
        await session.dispose()

    async def start_task(self, request: TaskRequest) -> AsyncGenerator[tuple[int, TaskEvent], None]:
        """Run a task; yield its events, numbered, until it ends (COMPLETED, FAILED or
        CANCELLED). The task outlives this stream by the grace window (task_log.py)."""
        self._validate(request)
        existing = self._sessions.get(request.session_id)
        if existing is not None and existing.task is not None and not existing.task.job.done():
            raise FailedPrecondition(f"session {request.session_id!r} already runs a task")
        planner = self._planner_for(request)
        gate = self._gate(request.session_id)
        session = await self._browser_for(request, gate)
        if self._gates.get(request.session_id) is not gate:
            # CloseBrowser came while Chromium was starting.
            await self._discard(session)
            raise FailedPrecondition(f"session {request.session_id!r} was closed while starting")
        if session.task is not None and not session.task.job.done():
            raise FailedPrecondition(f"session {request.session_id!r} already runs a task")
        spec = TaskSpec(
            session_id=request.session_id,
            task_text=request.task_text,
            url=request.url,
            max_steps=request.max_steps or self._settings.default_max_steps,
            action_timeout_ms=self._settings.action_timeout_ms,
            hand_over_on_password_field=hand_over_on_password_field(
                self._choice(request), request.on_password_field
            ),
        )

        async def abandoned() -> None:
            grace = self._settings.task_grace_s
            await self._stop(session, f"no session service followed the task for {grace:g} s")

        events = TaskLog(self._settings.task_grace_s, abandoned)

        def emit(event: TaskEvent) -> None:
            if isinstance(event, StatusChanged):
                session.last_status = event.status
            events.append(event)

        async def on_gone() -> None:
            await self._discard(session)

        runner = StepRunner(spec, planner, session.browser, session.gate, emit, on_gone)
        job = asyncio.ensure_future(runner.run())
        session.task = _RunningTask(runner, job, events)
        async for numbered in events.follow():
            yield numbered

    async def attach_task(
        self, session_id: str, after_seq: int
    ) -> AsyncGenerator[tuple[int, TaskEvent], None]:
        """The session's task's events after `after_seq`, live, until its end."""
        session = self._sessions.get(session_id)
        if session is None or session.task is None:
            raise NotFound(f"no task of session {session_id!r} here")
        async for numbered in session.task.log.follow(after_seq):
            yield numbered

    async def _stop(self, session: _Session, reason: str) -> TaskStatus | None:
        task = session.task
        if task is None:
            return session.last_status
        if not task.job.done():
            task.job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task.job
        task.runner.end(TaskStatus.CANCELLED, reason)
        return task.runner.status

    def _status(self, session: _Session | None) -> TaskStatus | None:
        if session is None:
            return TaskStatus.PENDING
        if session.task is not None:
            return session.task.runner.status
        return session.last_status

    async def pause(self, session_id: str) -> tuple[TaskStatus | None, bool]:
        outcome = await self._known_gate(session_id).pause()
        session = self._sessions.get(session_id)
        if session is not None and session_id not in self._watches:
            await self._start_watch(session)
        return self._status(session), outcome.aborted_action

    async def _start_watch(self, session: _Session) -> None:
        """Watch what a person does until ResumeTask; a page that cannot be read
        now (navigating, gone) only leaves the report's "before" empty."""
        notes = WatchNotes()
        started = time.monotonic()
        try:
            before = await asyncio.wait_for(session.browser.start_watch(notes), WATCH_START_S)
        except (BrowserGone, ActionFailed, TimeoutError) as error:
            log.info("session %s: page not read for the hand-back: %s", session.session_id, error)
            before = PageSnapshot(url=session.browser.url)
        self._watches[session.session_id] = _Watch(started, before, notes)

    async def take_handback(self, session_id: str) -> HandbackReport:
        """What the person did since the pause, so far; watching goes on until resume."""
        watch = self._watches.get(session_id)
        session = self._sessions.get(session_id)
        if watch is None or session is None:
            raise NotFound(f"session {session_id!r} is not paused here: nothing was watched")
        try:
            after = await session.browser.snapshot()
        except (BrowserGone, ActionFailed) as error:
            log.info("session %s: page not read for the hand-back: %s", session_id, error)
            after = PageSnapshot(url=session.browser.url)
        try:
            # What the person typed stays out of the report and of what the
            # agent's model sees next.
            await session.browser.remember_typed(
                [f.selector for f in watch.notes.fields],
                person_urls(watch.before, after, watch.notes),
            )
        except (BrowserGone, ActionFailed) as error:
            log.info("session %s: typed fields not read: %s", session_id, error)
        watch.report = build_report(
            watch.before,
            after,
            watch.notes,
            time.monotonic() - watch.started,
            session.browser.hide_typed,
        )
        return watch.report

    def resume(self, session_id: str) -> TaskStatus | None:
        self._known_gate(session_id).resume()
        session = self._sessions.get(session_id)
        watch = self._watches.pop(session_id, None)
        if session is not None:
            session.browser.stop_watch()
        if session is not None and watch is not None and watch.report is not None:
            # The agent learns what the person did: its task (step stream and
            # planner) and external CDP clients.
            if session.task is not None:
                session.task.runner.handed_back(watch.report)
            for listener in list(self._handback_listeners.get(session_id, ())):
                listener(watch.report)
        return self._status(session)

    def listen_handbacks(self, session_id: str, listener: HandbackListener) -> Callable[[], None]:
        """Tell `listener` of each hand-back report of the session; returns the unsubscribe."""
        listeners = self._handback_listeners.setdefault(session_id, set())
        listeners.add(listener)

        def forget() -> None:
            listeners.discard(listener)
            if not listeners and self._handback_listeners.get(session_id) is listeners:
                del self._handback_listeners[session_id]

        return forget

    async def cancel(self, session_id: str) -> TaskStatus | None:
        session = self._get(session_id)
        return await self._stop(session, "cancelled on request")

    async def act(self, session_id: str, step: Step) -> StepEvent:
        session = self._get(session_id)
        if isinstance(step.action, RequestUser):
            raise InvalidArgument("request_user is a task step: StartTask runs it")
        if session.gate.paused:
            raise FailedPrecondition("the session is paused: a person has control")
        browser = session.browser
        name = action_name(step.action)
        timeout = step.timeout_ms or self._settings.action_timeout_ms

        async def act() -> StepEvent:
            description = await describe_on_page(browser, step.action)
            started = time.monotonic()

            def event(status: StepStatus, error: str = "", result: str = "") -> StepEvent:
                return StepEvent(
                    index=0,
                    action=name,
                    status=status,
                    description=description,
                    url=browser.url,
                    duration_ms=int((time.monotonic() - started) * 1000),
                    error=error,
                    result=result,
                )

            try:
                result = await browser.perform(step.action, timeout)
            except ActionFailed as error:
                return event(StepStatus.FAILED, error=str(error))
            except BrowserGone:
                return event(StepStatus.FAILED, error=BROWSER_GONE_MESSAGE)
            return event(StepStatus.SUCCEEDED, result=result)

        try:
            return await session.gate.run(act)
        except (GateClosed, ActionAborted):
            raise FailedPrecondition("the session was paused: a person has control") from None

    async def cdp_target(self, session_id: str) -> tuple[BrowserPipe, ActionGate]:
        """Where an external CDP client of the session attaches, and the gate its
        commands go through (cdp_gate.py). A client may come as the session
        starts: its browser is waited for while StartTask opens it."""
        deadline = time.monotonic() + CDP_UNKNOWN_WAIT_S
        while session_id not in self._sessions:
            if session_id in self._gates:
                # StartTask arrived and opens the browser (bounded by its own launch).
                deadline = max(deadline, time.monotonic() + CDP_LAUNCH_WAIT_S)
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        session = self._get(session_id)
        if session.browser.cdp is None:
            raise FailedPrecondition(f"the browser of session {session_id!r} takes no CDP client")
        return session.browser.cdp, session.gate

    async def page_state(self, session_id: str, include_screenshot: bool) -> PageState:
        session = self._get(session_id)
        browser = session.browser
        try:
            observation = await browser.observe(with_aria=True)
            png = await browser.screenshot() if include_screenshot else b""
        except BrowserGone:
            raise FailedPrecondition(f"the browser of session {session_id!r} exited") from None
        except ActionFailed as error:
            raise FailedPrecondition(f"cannot read the page: {error}") from None
        return PageState(
            url=observation.url,
            title=observation.title,
            aria_snapshot=observation.aria_snapshot,
            screenshot_png=png,
            task_status=self._status(session),
        )

    async def probe_page(self, session_id: str, selector: str) -> tuple[str, bool]:
        """The page's URL and whether `selector` matches (auto-return conditions)."""
        browser = self._get(session_id).browser
        try:
            return await browser.probe(selector)
        except BrowserGone:
            raise FailedPrecondition(f"the browser of session {session_id!r} exited") from None

    async def close_browser(self, session_id: str) -> None:
        self._watches.pop(session_id, None)
        gate = self._gates.pop(session_id, None)
        self._launching.pop(session_id, None)
        session = self._sessions.get(session_id)
        if gate is not None:
            await gate.abort()
        if session is None:
            return
        await self._stop(session, "the browser was closed")
        await self._discard(session)

    def with_browser(self) -> list[str]:
        """Sessions whose Chromium runs here or is being started."""
        running = {sid for sid, s in self._sessions.items() if s.browser.alive()}
        starting = {sid for sid, lock in self._launching.items() if lock.locked()}
        return sorted(running | starting)

    async def close_all(self) -> None:
        self._gates.clear()
        for session in list(self._sessions.values()):
            await self._stop(session, "the automation service is shutting down")
            await self._discard(session)
