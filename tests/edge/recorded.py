"""Recorded sessions for the end-to-end tests of recording and replay: start one,
end one and wait for its recorder to go, and read what the edge serves of it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from services.automation.proc_table import list_processes
from services.display.settings import NumberRange
from tests.conftest import eventually
from tests.edge.full_stack import FullStack
from tests.edge.harness import bearer

# A page of one colour, then long enough on it for the video to show it.
COLOUR_STEPS: tuple[dict[str, Any], ...] = ({"action": "wait", "ms": 1500},)


def ffmpeg_pids(displays: NumberRange) -> list[int]:
    """The recorders grabbing one of `displays` (a suite's own: other suites may
    record at the same time)."""
    grabbed = {f":{display}" for display in range(displays.first, displays.last + 1)}
    return [
        entry.pid
        for entry in list_processes()
        if entry.argv
        and entry.argv[0].endswith("ffmpeg")
        and "x11grab" in entry.argv
        and grabbed & set(entry.argv)
    ]


async def start_recorded(
    stack: FullStack, token: str, task: str, steps: tuple[dict[str, Any], ...] = COLOUR_STEPS
) -> str:
    """A recorded session that goes to the colour page, then runs `steps`: its id,
    once its task has finished (the agent's work is in the video)."""
    session = await stack.request(
        "POST",
        "/api/browser-session",
        token,
        {
            "task": task,
            "record": True,
            "steps": [{"action": "goto", "url": stack.site.colour_url}, *steps],
        },
    )
    assert "startedAt" in session["recording"], session
    await stack.wait_for_session(token, session["id"], lambda s: s["state"] == "FINISHED")
    return str(session["id"])


async def end_recorded(
    stack: FullStack, token: str, session_id: str, displays: NumberRange
) -> None:
    """End the session; return once the recorders of `displays` have written
    their last fragment and gone, so the video is whole (under load one was seen
    to outlive the DELETE's answer by a moment)."""
    await stack.request("DELETE", f"/api/browser-session/{session_id}", token)
    await eventually(lambda: not ffmpeg_pids(displays), within_s=10)


async def read_timeline(stack: FullStack, token: str, session_id: str) -> tuple[Any, str]:
    """The session's timeline (GET .../timeline), parsed, and its raw text."""
    status, raw, _ = await get(stack, f"/api/browser-session/{session_id}/timeline", token)
    assert status == 200, raw
    return json.loads(raw), raw.decode()


async def get(stack: FullStack, path: str, token: str, **headers: str) -> tuple[int, bytes, Any]:
    """The edge's answer to a GET: status, body and headers."""
    async with stack.http.get(
        f"{stack.url}{path}", headers={**bearer(token), **headers}
    ) as response:
        return response.status, await response.read(), response.headers


async def run(*argv: str) -> bytes:
    """A program's output (ffmpeg, ffprobe); it must succeed."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out
