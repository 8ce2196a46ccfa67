"""Recording and replay end to end: real Xvnc, ffmpeg, Chromium, every service.

A recorded session runs steps on a page of one colour, a person takes control
and returns it, the session ends; its video and timeline are then read through
the edge as the owner, an operator and another user would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from services.display.settings import NumberRange
from tests.conftest import require_binary
from tests.edge.full_stack import COLOUR_RGB, FullStack, full_stack
from tests.edge.harness import OPERATOR_TOKEN, user_token
from tests.edge.recorded import (
    end_recorded,
    ffmpeg_pids,
    get,
    read_timeline,
    run,
    start_recorded,
)
from tests.edge.test_full_stack import raw_viewer, stream_url

pytestmark = pytest.mark.asyncio(loop_scope="module")

# This suite's displays and VNC ports (2710-2719 / 22710-22719).
DISPLAYS = NumberRange(2710, 2719)
VNC_PORTS = NumberRange(22710, 22719)
ALICE = user_token("alice")
BOB = user_token("bob")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FullStack]:
    require_binary("ffmpeg", "ffmpeg")
    async with full_stack(tmp_path_factory.mktemp("recording"), DISPLAYS, VNC_PORTS) as running:
        yield running


@pytest.mark.timeout(90)
async def test_a_recorded_session_with_a_takeover_replays_as_it_happened(
    stack: FullStack, tmp_path: Path
) -> None:
    site = stack.site
    session_id = await start_recorded(stack, ALICE, "look at the colour")
    base = f"/api/browser-session/{session_id}"
    assert ffmpeg_pids(DISPLAYS), "the session is being recorded"
    await stack.request("PUT", f"{base}/control", ALICE, {"action": "take_control"})
    await asyncio.sleep(1.5)
    await stack.request("PUT", f"{base}/control", ALICE, {"action": "return_control"})
    await asyncio.sleep(1.0)
    await end_recorded(stack, ALICE, session_id, DISPLAYS)

    # The timeline: the steps and the handoff, each placed in the video.
    timeline, _ = await read_timeline(stack, ALICE, session_id)
    control = [
        (e["action"], e["userId"], e["state"]) for e in timeline["events"] if e["kind"] == "control"
    ]
    assert control == [
        ("take_control", "alice", "USER_CONTROL"),
        ("return_control", "alice", "FINISHED"),
        (None, None, "ENDED"),
    ]
    steps = [e for e in timeline["events"] if e["kind"] == "step"]
    goto_done = next(e for e in steps if e["action"] == "goto" and e["status"] == "succeeded")
    assert timeline["urls"][-1]["url"] == site.colour_url
    offsets = [e["offsetS"] for e in timeline["events"]]
    assert offsets == sorted(offsets) and offsets[0] >= 0

    # The video lasts as long as the session was recorded (to the end entry).
    status, video, headers = await get(stack, f"{base}/recording", OPERATOR_TOKEN)
    assert status == 200 and headers["Content-Type"] == "video/mp4"
    assert int(headers["Content-Length"]) == len(video) > 0
    (tmp_path / "video.mp4").write_bytes(video)
    probe = json.loads(
        await run(
            "ffprobe",
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            str(tmp_path / "video.mp4"),
        )
    )
    ended_at = timeline["events"][-1]["offsetS"]
    assert abs(float(probe["format"]["duration"]) - ended_at) < 1.5, (probe, ended_at)

    # Its frame just after the goto shows the page's colour.
    frame = await run(
        "ffmpeg",
        "-v",
        "error",
        "-ss",
        str(goto_done["offsetS"] + 0.8),
        "-i",
        str(tmp_path / "video.mp4"),
        "-frames:v",
        "1",
        "-vf",
        "crop=2:2:640:500",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    )
    pixel = tuple(frame[:3])
    assert all(abs(a - b) <= 16 for a, b in zip(pixel, COLOUR_RGB, strict=True)), pixel

    # A byte range is exactly those bytes, for the owner.
    status, part, headers = await get(stack, f"{base}/recording", ALICE, Range="bytes=100-1099")
    assert status == 206
    assert headers["Content-Range"] == f"bytes 100-1099/{len(video)}"
    assert part == video[100:1100]
    status, _, headers = await get(stack, f"{base}/recording", ALICE, Range="bytes=99999999-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(video)}"

    # Someone else sees neither; no ffmpeg outlived the session.
    for path in (f"{base}/recording", f"{base}/timeline"):
        status, raw, _ = await get(stack, path, BOB)
        assert status == 404, raw
    assert ffmpeg_pids(DISPLAYS) == []


async def test_a_session_not_recorded_has_no_recording(stack: FullStack) -> None:
    session = await stack.request(
        "POST",
        "/api/browser-session",
        ALICE,
        {"task": "not recorded", "steps": [{"action": "goto", "url": stack.site.colour_url}]},
    )
    base = f"/api/browser-session/{session['id']}"
    try:
        assert "recording" not in session
        status, raw, _ = await get(stack, f"{base}/recording", ALICE)
        assert status == 404
        assert json.loads(raw)["error"]["message"] == f"session {session['id']} was not recorded"
        # The session itself is there: its timeline answers, without a recording.
        status, raw, _ = await get(stack, f"{base}/timeline", ALICE)
        assert status == 200 and json.loads(raw)["recording"] is None
    finally:
        await stack.request("DELETE", base, ALICE)


async def frame_at(video: Path, offset_s: float) -> bytes:
    """The decoded frame shown at `offset_s`, as raw grey pixels."""
    return await run(
        "ffmpeg", "-v", "error", "-ss", f"{offset_s:.3f}", "-i", str(video),
        "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-",
    )  # fmt: skip


def pixels_apart(a: bytes, b: bytes) -> int:
    assert len(a) == len(b) > 0
    return sum(1 for x, y in zip(a, b, strict=True) if abs(x - y) > 24)


@pytest.mark.timeout(90)
async def test_with_record_during_takeover_false_the_video_holds_while_a_person_types(
    stack: FullStack, tmp_path: Path
) -> None:
    """Nothing the person does is in the video: it holds its last frame from the
    takeover to the return (a gap in the timeline) while they click and type, and
    goes on after: the agent's next page shows (the positive marker)."""
    session = await stack.request(
        "POST",
        "/api/browser-session",
        ALICE,
        {
            "task": "private typing",
            "record": True,
            "recordDuringTakeover": False,
            "steps": [
                {"action": "goto", "url": stack.site.form_url},
                {"action": "request_user", "reason": "type"},
                {"action": "goto", "url": stack.site.colour_url},
            ],
        },
    )
    base = f"/api/browser-session/{session['id']}"
    await asyncio.wait_for(
        stack.wait_for_session(
            ALICE, session["id"], lambda s: s["task"]["status"] == "WAITING_FOR_USER"
        ),
        30,
    )
    await asyncio.sleep(1.0)
    await stack.request("PUT", f"{base}/control", ALICE, {"action": "take_control"})
    stack.site.clear()
    async with raw_viewer(await stream_url(stack, ALICE, session["id"])) as viewer:
        await viewer.click(640, 360)
        await viewer.type("MMMMMMMMMMMMMMMM")
        await viewer.sync()
        await asyncio.wait_for(stack.site.wait_until(lambda: len(stack.site.keys()) >= 16), 20)
        await asyncio.sleep(1.5)
    await stack.request("PUT", f"{base}/control", ALICE, {"action": "return_control"})
    await stack.wait_for_session(ALICE, session["id"], lambda s: s["state"] == "FINISHED")
    await asyncio.sleep(1.5)
    await end_recorded(stack, ALICE, session["id"], DISPLAYS)

    recording = (await read_timeline(stack, ALICE, session["id"]))[0]["recording"]
    assert recording["pausedDuringTakeover"] is True
    [gap] = recording["gaps"]
    assert gap["toS"] - gap["fromS"] >= 1.2, gap
    _, video_bytes, _ = await get(stack, f"{base}/recording", ALICE)
    video = tmp_path / "private.mp4"
    video.write_bytes(video_bytes)
    # From when the hold began (the agent paused first) to the return.
    early = await frame_at(video, gap["fromS"] + 0.5)
    middle = await frame_at(video, (gap["fromS"] + gap["toS"]) / 2 + 0.25)
    late = await frame_at(video, gap["toS"] - 0.3)
    ended = float(
        (
            await run(
                "ffprobe", "-v", "error", "-show_entries", "format=duration",
                "-of", "csv=p=0", str(video),
            )
        ).decode()
    )  # fmt: skip
    after = await frame_at(video, ended - 0.5)
    # Held: the same picture throughout the takeover, while the person clicked
    # and typed (their input only passes once the hold is in place).
    assert pixels_apart(early, middle) == 0 and pixels_apart(middle, late) == 0
    # Back after the return: the agent's next page (one colour) is in the video.
    assert pixels_apart(late, after) > 500
