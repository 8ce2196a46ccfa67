"""An external CDP client's commands, gated by control (README.md, "CDP").

The core promise holds for CDP as for the built-in agent: while a person has
control (the session's ActionGate is paused), nothing an external agent sends
changes the page. Read-only commands (screenshots, DOM and accessibility reads,
event subscriptions: `READ_ONLY`, `is_read_only`) pass at once. Every other
command is held, in order, and run once control returns to the AI, through the
same gate as the built-in agent's actions: a pause waits for the one in flight,
and after a resume the person's last input reaches the page first. With
`reject`, a command that would be held is answered at once with a CDP error
saying a person has control. Closing the browser is never an agent's: the
session's end is (DELETE the session).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from services.automation.action_gate import ActionAborted, ActionGate, GateClosed
from services.automation.cdp_hub import BrowserPipe, CdpClient

# CDP's "server error" code for a refused command.
REFUSED_CODE = -32000
PERSON_HAS_CONTROL = (
    "a person has control of this session: the command was not run (Baton holds "
    "such commands until control returns unless the client asked for onUserControl=reject)"
)
BROWSER_IS_THE_SESSIONS = "closing the browser ends the session: end the session instead"

# Reads and subscriptions: they change nothing a person sees or does.
READ_ONLY = frozenset(
    {
        "Accessibility.getChildAXNodes",
        "Accessibility.getFullAXTree",
        "Accessibility.getPartialAXTree",
        "Accessibility.getRootAXNode",
        "Accessibility.queryAXTree",
        "Browser.getBrowserCommandLine",
        "Browser.getVersion",
        "Browser.getWindowBounds",
        "Browser.getWindowForTarget",
        "DOM.describeNode",
        "DOM.getAttributes",
        "DOM.getBoxModel",
        "DOM.getContentQuads",
        "DOM.getDocument",
        "DOM.getFlattenedDocument",
        "DOM.getNodeForLocation",
        "DOM.getOuterHTML",
        "DOM.querySelector",
        "DOM.querySelectorAll",
        "DOM.requestChildNodes",
        "DOMSnapshot.captureSnapshot",
        "Network.getResponseBody",
        "Page.captureScreenshot",
        "Page.getFrameTree",
        "Page.getLayoutMetrics",
        "Page.getNavigationHistory",
        "Page.setLifecycleEventsEnabled",
        "Runtime.releaseObject",
        "Runtime.releaseObjectGroup",
        # Lets a target the client's auto-attach paused go on: holding it would
        # freeze a tab the person opened.
        "Runtime.runIfWaitingForDebugger",
        "Target.attachToBrowserTarget",
        "Target.attachToTarget",
        "Target.detachFromTarget",
        "Target.getTargetInfo",
        "Target.getTargets",
        "Target.setAutoAttach",
        "Target.setDiscoverTargets",
    }
)
# Domains whose enable/disable only subscribes to events (Fetch, Debugger and
# Overlay are not: they stop requests, scripts, or draw on the page).
SUBSCRIPTION_DOMAINS = frozenset(
    {
        "Accessibility",
        "CSS",
        "DOM",
        "Inspector",
        "Log",
        "Network",
        "Page",
        "Performance",
        "Runtime",
        "Security",
        "Target",
    }
)
ALWAYS_REFUSED = frozenset({"Browser.close", "Browser.crash", "Browser.crashGpuProcess"})


def is_read_only(method: str, params: Message | None = None) -> bool:
    domain, _, name = method.partition(".")
    if method == "Page.captureScreenshot" and (params or {}).get("captureBeyondViewport"):
        # Chromium resizes the page for it: the person would see the layout move.
        return False
    return method in READ_ONLY or (name in ("enable", "disable") and domain in SUBSCRIPTION_DOMAINS)


# What the gate did, told to the caller for /metrics: "held" (a command waits),
# "released" (with the seconds it waited), "rejected".
Report = Callable[[str, float], None]

Message = dict[str, Any]


def refusal(command: Message, text: str) -> Message:
    answer: Message = {"id": command.get("id"), "error": {"code": REFUSED_CODE, "message": text}}
    if "sessionId" in command:
        answer["sessionId"] = command["sessionId"]
    return answer


class GatedCdp:
    """Feeds one client's commands to the browser by the gate's rules."""

    def __init__(
        self,
        client: CdpClient,
        gate: ActionGate,
        reject: bool,
        refuse: Callable[[Message], None],
        report: Report,
    ) -> None:
        self._client = client
        self._gate = gate
        self._reject = reject
        self._refuse = refuse
        self._report = report
        # Commands that change the page, in the order they came.
        self._held: asyncio.Queue[tuple[Message, float | None]] = asyncio.Queue()
        self._worker = asyncio.ensure_future(self._run_in_order())

    def submit(self, command: Message) -> None:
        method = str(command.get("method", ""))
        if method in ALWAYS_REFUSED:
            self._refuse(refusal(command, BROWSER_IS_THE_SESSIONS))
        elif is_read_only(method, command.get("params")):
            self._client.send(command)
        elif self._reject and self._gate.paused:
            self._report("rejected", 0.0)
            self._refuse(refusal(command, PERSON_HAS_CONTROL))
        else:
            held_since = None
            if self._gate.paused:
                held_since = time.monotonic()
                self._report("held", 0.0)
            self._held.put_nowait((command, held_since))

    async def _run_in_order(self) -> None:
        while True:
            command, held_since = await self._held.get()
            await self._run(command, held_since)

    async def _run(self, command: Message, held_since: float | None) -> None:
        while True:
            if self._gate.paused:
                if self._reject:
                    self._report("rejected", 0.0)
                    self._refuse(refusal(command, PERSON_HAS_CONTROL))
                    return
                if held_since is None:
                    held_since = time.monotonic()
                    self._report("held", 0.0)
                await self._gate.wait_open()
            try:
                # Through the gate: a pause waits for this command's answer.
                await self._gate.run(lambda: self._client.send(command))
            except GateClosed:
                continue
            except (ActionAborted, asyncio.CancelledError) as error:
                if isinstance(error, asyncio.CancelledError) and not self._client.closed:
                    raise
            break
        if held_since is not None:
            self._report("released", time.monotonic() - held_since)

    async def close(self) -> None:
        self._worker.cancel()
        await asyncio.gather(self._worker, return_exceptions=True)
        self._client.close()


@dataclass(frozen=True)
class GateEvent:
    action: str
    held_seconds: float


def _command_or_error(text: str) -> tuple[Message | None, Message | None]:
    """The command in `text`, or the CDP error answering it."""
    try:
        command = json.loads(text)
    except ValueError:
        return None, {"id": None, "error": {"code": -32700, "message": "Parse error"}}
    if (
        not isinstance(command, dict)
        or not isinstance(command.get("id"), int)
        or not isinstance(command.get("method"), str)
        or not isinstance(command.get("params", {}), dict)
        or not isinstance(command.get("sessionId", ""), str)
    ):
        own_id = command.get("id") if isinstance(command, dict) else None
        error = {"code": -32600, "message": "Invalid Request: needs an integer id and a method"}
        return None, {"id": own_id if isinstance(own_id, int) else None, "error": error}
    return command, None


async def cdp_stream(
    pipe: BrowserPipe,
    gate: ActionGate,
    reject: bool,
    commands: AsyncIterator[str],
    notices: AsyncIterator[Message] | None = None,
) -> AsyncIterator[str | GateEvent]:
    """One external client's whole conversation: its `commands` in, the browser's
    answers and events (JSON) and what the gate did out, until either side ends.
    `notices` are Baton's own CDP events for the client (`Baton.controlReturned`
    with the hand-back report: README.md, "CDP")."""
    client = await pipe.attach()
    out: asyncio.Queue[str | GateEvent | None] = asyncio.Queue()

    def refuse(answer: Message) -> None:
        out.put_nowait(json.dumps(answer))

    gated = GatedCdp(
        client, gate, reject, refuse, lambda action, s: out.put_nowait(GateEvent(action, s))
    )

    async def read_commands() -> None:
        async for text in commands:
            command, error = _command_or_error(text)
            if command is not None:
                gated.submit(command)
            elif error is not None:
                refuse(error)
        out.put_nowait(None)

    async def forward() -> None:
        while (message := await client.receive()) is not None:
            out.put_nowait(json.dumps(message))
        out.put_nowait(None)

    async def notify(notices: AsyncIterator[Message]) -> None:
        async for notice in notices:
            out.put_nowait(json.dumps(notice))

    tasks = [asyncio.ensure_future(read_commands()), asyncio.ensure_future(forward())]
    if notices is not None:
        tasks.append(asyncio.ensure_future(notify(notices)))
    try:
        while (item := await out.get()) is not None:
            yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await gated.close()
