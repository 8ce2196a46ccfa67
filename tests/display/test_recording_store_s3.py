"""The S3 recording store against a real S3-compatible server (moto's, over
loopback HTTP) with the real boto3: upload at the end, reads from the bucket,
retention, a failed upload kept and retried, the start-up check."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from services.display.recording_store_s3 import ObjectRecordingStore, RecordingBucketClient
from services.display.recordings import RecordingStore
from services.display.settings import RecordingBucket
from services.runtime.errors import NotFound
from services.runtime.settings import ConfigError, Env
from tests.conftest import INTERNAL_TOKEN, eventually
from tests.s3_server import ACCESS_KEY, SECRET_KEY, S3Server, s3_server

RETENTION_S = 3600.0
VIDEO = bytes(range(256)) * 1024  # 256 KiB: several read chunks


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


def make_store(
    s3: S3Server, tmp_path: Path, retry_s: float = 30.0
) -> tuple[ObjectRecordingStore, RecordingStore, RecordingBucket]:
    disk = RecordingStore(tmp_path / "recordings", RETENTION_S, "s3-host")
    disk.open()
    bucket = s3.bucket()
    return ObjectRecordingStore(disk, RecordingBucketClient(bucket), retry_s), disk, bucket


def record(store: ObjectRecordingStore, session_id: str, data: bytes = VIDEO) -> Path:
    """What the slot pool and ffmpeg do: mark it active, write the file."""
    store.active.add(session_id)
    path = store.path_for(session_id)
    path.write_bytes(data)
    return path


def end(store: ObjectRecordingStore, session_id: str) -> None:
    store.active.discard(session_id)
    store.ended(session_id)


async def read_all(store: ObjectRecordingStore, session_id: str, offset: int, length: int) -> bytes:
    return b"".join([chunk async for chunk in store.read(session_id, offset, length)])


@contextlib.asynccontextmanager
async def running(store: ObjectRecordingStore) -> AsyncIterator[None]:
    task = asyncio.create_task(store.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def object_bytes(s3: S3Server, bucket: RecordingBucket, session_id: str) -> bytes:
    answer = s3.client().get_object(Bucket=bucket.bucket, Key=bucket.key_for(session_id))
    return answer["Body"].read()


def keys(s3: S3Server, bucket: RecordingBucket) -> list[str]:
    listing = s3.client().list_objects_v2(Bucket=bucket.bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


async def test_an_ended_recording_moves_to_the_bucket_and_is_read_from_there(
    s3: S3Server, tmp_path: Path
) -> None:
    store, _, bucket = make_store(s3, tmp_path)
    path = record(store, "sess-a")
    async with running(store):
        # While recorded it stays on disk, and is read from there.
        await asyncio.sleep(0.3)
        assert path.exists() and keys(s3, bucket) == []
        assert await store.size("sess-a") == len(VIDEO)
        assert await read_all(store, "sess-a", 10, 20) == VIDEO[10:30]
        end(store, "sess-a")
        await eventually(lambda: not path.exists())
    assert keys(s3, bucket) == ["rec/sess-a.mp4"]
    assert object_bytes(s3, bucket, "sess-a") == VIDEO
    # From the bucket now: the size, a range, a range past the end, the rest.
    assert await store.size("sess-a") == len(VIDEO)
    assert await read_all(store, "sess-a", 1000, 70000) == VIDEO[1000:71000]
    assert await read_all(store, "sess-a", len(VIDEO) - 5, 100) == VIDEO[-5:]
    assert await read_all(store, "sess-a", 0, 0) == VIDEO
    with pytest.raises(NotFound, match="no recording of session sess-b"):
        await store.size("sess-b")


async def test_a_failed_upload_keeps_the_file_and_is_retried(
    s3: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, _, bucket = make_store(s3, tmp_path, retry_s=0.5)
    path = record(store, "sess-retry")
    s3.stop()
    try:
        with caplog.at_level(logging.WARNING, "services.display.recording_store_s3"):
            async with running(store):
                end(store, "sess-retry")
                await eventually(
                    lambda: "sess-retry not uploaded (kept on disk" in caplog.text, within_s=20
                )
                # Kept, and still served from the disk.
                assert path.read_bytes() == VIDEO
                assert await read_all(store, "sess-retry", 5, 5) == VIDEO[5:10]
                s3.restart()
                await eventually(lambda: not path.exists(), within_s=20)
    finally:
        if not s3.up:
            s3.restart()
    assert object_bytes(s3, bucket, "sess-retry") == VIDEO


async def test_a_stop_uploads_what_ended_and_a_later_run_what_was_left(
    s3: S3Server, tmp_path: Path
) -> None:
    store, disk, bucket = make_store(s3, tmp_path)
    left = record(store, "sess-left")
    end(store, "sess-left")
    # Not running: as after a crash; the next run's first pass uploads it.
    assert left.exists()
    later = ObjectRecordingStore(disk, RecordingBucketClient(bucket))
    await later.close()
    assert not left.exists() and object_bytes(s3, bucket, "sess-left") == VIDEO


async def test_the_sweep_deletes_objects_past_retention_and_nothing_else(
    s3: S3Server, tmp_path: Path
) -> None:
    store, _, bucket = make_store(s3, tmp_path)
    for session_id in ("sess-old", "sess-kept"):
        record(store, session_id)
        end(store, session_id)
    await store.close()
    client = s3.client()
    foreign = [f"{bucket.prefix}notes.txt", f"{bucket.prefix}sub/x.mp4", "other/sess-old.mp4"]
    for key in foreign:
        client.put_object(Bucket=bucket.bucket, Key=key, Body=b"not ours")
    # Not yet past retention: nothing goes.
    assert await store.sweep(time.time()) == []
    # Past retention, while sess-kept is being recorded again (never expired then).
    store.active.add("sess-kept")
    assert await store.sweep(time.time() + RETENTION_S + 10) == ["sess-old"]
    assert keys(s3, bucket) == sorted([*foreign, "rec/sess-kept.mp4"])
    with pytest.raises(NotFound):
        await store.size("sess-old")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_start_up_check_names_each_problem_in_one_line(s3: S3Server) -> None:
    good = s3.bucket()
    RecordingBucketClient(good).check()
    missing = RecordingBucket(
        bucket="no-such-bucket",
        endpoint_url=s3.url,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
    )
    with pytest.raises(ConfigError) as error:
        RecordingBucketClient(missing).check()
    assert str(error.value) == (
        f"BATON_RECORDING_S3_BUCKET=no-such-bucket: no such bucket at {s3.url}"
    )
    unreachable_url = f"http://127.0.0.1:{free_port()}"
    unreachable = RecordingBucket(
        bucket=good.bucket,
        endpoint_url=unreachable_url,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
    )
    with pytest.raises(ConfigError) as error:
        RecordingBucketClient(unreachable).check()
    message = str(error.value)
    assert message.startswith(f"BATON_RECORDING_S3_URL: cannot reach {unreachable_url}")
    assert "\n" not in message


def test_the_bucket_settings_are_read_from_the_environment() -> None:
    assert RecordingBucket.from_env(Env({})) is None
    bucket = RecordingBucket.from_env(
        Env(
            {
                "BATON_RECORDING_S3_BUCKET": "videos",
                "BATON_RECORDING_S3_URL": "http://127.0.0.1:9000",
                "BATON_RECORDING_S3_PREFIX": "baton/",
                "AWS_ACCESS_KEY_ID": "id",
                "AWS_SECRET_ACCESS_KEY": "secret",
            }
        )
    )
    assert bucket is not None and bucket.key_for("abc") == "baton/abc.mp4"
    assert bucket.endpoint_url == "http://127.0.0.1:9000" and "secret" not in repr(bucket)
    for environ, problem in [
        ({"BATON_RECORDING_S3_URL": "http://x"}, "BATON_RECORDING_S3_BUCKET is not"),
        (
            {"BATON_RECORDING_S3_BUCKET": "b", "BATON_RECORDING_S3_URL": "x:9000"},
            "not an http:// or https:// URL",
        ),
        ({"BATON_RECORDING_S3_BUCKET": "b", "AWS_ACCESS_KEY_ID": "id"}, "set both"),
    ]:
        with pytest.raises(ConfigError, match=problem):
            RecordingBucket.from_env(Env(environ))


async def test_another_host_sharing_the_bucket_reads_an_uploaded_recording(
    s3: S3Server, tmp_path: Path
) -> None:
    store, _, bucket = make_store(s3, tmp_path / "first-host")
    record(store, "sess-moved")
    end(store, "sess-moved")
    await store.close()
    other_disk = RecordingStore(tmp_path / "second-host", RETENTION_S, "second-host")
    other_disk.open()
    other = ObjectRecordingStore(other_disk, RecordingBucketClient(bucket))
    assert await other.size("sess-moved") == len(VIDEO)
    assert await read_all(other, "sess-moved", 300, 400) == VIDEO[300:700]


@pytest.mark.parametrize("problem", ["no such bucket", "cannot reach"])
def test_the_display_service_refuses_to_start_in_one_line(
    s3: S3Server, tmp_path: Path, problem: str
) -> None:
    url = s3.url if problem == "no such bucket" else f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value,
        "BATON_DISPLAY_PORT": str(free_port()),
        "BATON_DISPLAY_STATE_DIR": str(tmp_path / "state"),
        "BATON_DISPLAY_NUMBERS": "3320-3329",
        "BATON_VNC_PORTS": "23320-23329",
        "BATON_WARM_SLOTS": "0",
        "BATON_RECORDING_S3_BUCKET": "missing-bucket",
        "BATON_RECORDING_S3_URL": url,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    result = subprocess.run(
        [sys.executable, "-m", "services.display"],
        env=env,
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: BATON_RECORDING_S3_"), lines
    assert problem in lines[0] and url in lines[0]
    # Refused before anything started: no state dir was made.
    assert not (tmp_path / "state").exists()


async def test_an_upload_the_store_refuses_keeps_the_file(
    s3: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, disk, bucket = make_store(s3, tmp_path)
    # The bucket went away after the start-up check.
    gone = ObjectRecordingStore(
        disk, RecordingBucketClient(replace(bucket, bucket="deleted-bucket"))
    )
    path = record(gone, "sess-refused")
    end(gone, "sess-refused")
    with caplog.at_level(logging.WARNING, "services.display.recording_store_s3"):
        assert await gone.upload_finished() == 0
    assert "sess-refused not uploaded (kept on disk" in caplog.text
    assert "NoSuchBucket" in caplog.text
    assert path.read_bytes() == VIDEO
    # The same file goes up once the bucket is there.
    assert await store.upload_finished() == 1 and not path.exists()
