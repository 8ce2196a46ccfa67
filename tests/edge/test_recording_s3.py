"""Recordings in an S3-compatible store, end to end: real Xvnc, ffmpeg,
Chromium, every service, boto3 against moto's S3 server on loopback.

A recorded session ends; its video leaves the worker's disk for the bucket, and
the edge still serves it, byte ranges included, now read from the bucket.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from services.display.settings import NumberRange, RecordingBucket
from tests.conftest import eventually, require_binary
from tests.edge.full_stack import FullStack, full_stack
from tests.edge.recorded import end_recorded, ffmpeg_pids, get, run, start_recorded
from tests.edge.test_recording_replay import ALICE
from tests.s3_server import S3Server, s3_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

# This suite's displays and VNC ports (3300-3309 / 23300-23309).
DISPLAYS = NumberRange(3300, 3309)
VNC_PORTS = NumberRange(23300, 23309)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def bucket(s3: S3Server) -> RecordingBucket:
    return s3.bucket(prefix="videos/")


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("recording-s3")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(work_dir: Path, bucket: RecordingBucket) -> AsyncIterator[FullStack]:
    require_binary("ffmpeg", "ffmpeg")
    async with full_stack(work_dir, DISPLAYS, VNC_PORTS, recording_bucket=bucket) as running:
        yield running


@pytest.mark.timeout(90)
async def test_an_ended_recording_is_served_from_the_bucket(
    stack: FullStack, s3: S3Server, bucket: RecordingBucket, work_dir: Path, tmp_path: Path
) -> None:
    session_id = await start_recorded(stack, ALICE, "look at the colour")
    base = f"/api/browser-session/{session_id}"
    local = work_dir / "display" / "recordings" / f"{session_id}.mp4"
    # While recorded, the video is on the worker's disk and nowhere else.
    assert local.exists() and ffmpeg_pids(DISPLAYS)
    client = s3.client()
    key = f"videos/{session_id}.mp4"
    assert "Contents" not in client.list_objects_v2(Bucket=bucket.bucket)
    await end_recorded(stack, ALICE, session_id, DISPLAYS)

    # The recording ended: up in the bucket, off the disk.
    await eventually(lambda: not local.exists(), within_s=20)
    stored = client.get_object(Bucket=bucket.bucket, Key=key)["Body"].read()
    assert len(stored) > 1000

    # Served from the bucket: a byte range is exactly those bytes of the object.
    status, part, headers = await get(stack, f"{base}/recording", ALICE, Range="bytes=100-1099")
    assert status == 206, part
    assert headers["Content-Range"] == f"bytes 100-1099/{len(stored)}"
    assert part == stored[100:1100]
    status, video, headers = await get(stack, f"{base}/recording", ALICE)
    assert status == 200 and video == stored
    (tmp_path / "video.mp4").write_bytes(video)
    probe = json.loads(
        await run(
            "ffprobe", "-v", "error", "-count_frames", "-print_format", "json",
            "-show_format", "-show_streams", str(tmp_path / "video.mp4"),
        )
    )  # fmt: skip
    assert float(probe["format"]["duration"]) > 1.0
    assert int(probe["streams"][0]["nb_read_frames"]) > 5
