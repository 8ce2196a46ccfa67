"""Recordings in an S3-compatible object store (README.md, "Recording").

While ffmpeg records, the file is on this host's disk and read from there
(recordings.RecordingStore). Once the recording has ended it is uploaded to
`<prefix><session id>.mp4` in the bucket and removed from the disk; reads then
come from the bucket (GetObject with a Range). An upload that fails leaves the
file on disk, is logged, and is tried again every `retry_s`; a later run of the
service uploads what an earlier one left. Retention: objects whose
LastModified is older than BATON_RECORDING_RETENTION_S are deleted by the same
sweep as the files.

boto3 (AWS's own SDK, the reference client of S3-compatible stores) does the
HTTP; its calls block, so each runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from services.display.recordings import (
    CHUNK_BYTES,
    RecordingStore,
    StoredRecording,
    check_span,
    expired,
    sweep_interval,
)
from services.display.settings import RecordingBucket
from services.runtime.errors import InvalidArgument, NotFound, Unavailable
from services.runtime.session_ids import check_session_id
from services.runtime.settings import ConfigError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

_SUFFIX = ".mp4"
# Short: a store that does not answer must not hold a read or a stop for long.
_CLIENT_CONFIG = Config(
    connect_timeout=3, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"}
)
_T = TypeVar("_T")


def _reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', '?')} {error.get('Message', '')}".strip()
    return str(exc)


def _missing(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    return code in ("404", "NoSuchKey", "NotFound")


class RecordingBucketClient:
    """The bucket's few operations the store needs, on one boto3 client."""

    def __init__(self, settings: RecordingBucket) -> None:
        self.settings = settings
        self._client: S3Client = boto3.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            config=_CLIENT_CONFIG,
        )

    def check(self) -> None:
        """ConfigError, one line, unless the bucket is there and ours to use."""
        where = self.settings.endpoint_url or f"AWS region {self.settings.region}"
        bucket = self.settings.bucket
        try:
            self._client.head_bucket(Bucket=bucket)
        except NoCredentialsError:
            raise ConfigError(
                "no credentials for BATON_RECORDING_S3_BUCKET: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or a shared credentials file)"
            ) from None
        except ClientError as exc:
            if _missing(exc) or exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
                raise ConfigError(
                    f"BATON_RECORDING_S3_BUCKET={bucket}: no such bucket at {where}"
                ) from None
            raise ConfigError(
                f"BATON_RECORDING_S3_BUCKET={bucket} at {where} refused: {_reason(exc)} "
                "(check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
            ) from None
        except BotoCoreError as exc:
            raise ConfigError(f"BATON_RECORDING_S3_URL: cannot reach {where}: {exc}") from None

    async def _call(self, call: Callable[[], _T]) -> _T:
        return await asyncio.to_thread(call)

    async def upload(self, path: Path, key: str) -> None:
        await self._call(lambda: self._client.upload_file(str(path), self.settings.bucket, key))

    async def size(self, key: str) -> int | None:
        """The object's size; None when there is none."""
        try:
            head = await self._call(
                lambda: self._client.head_object(Bucket=self.settings.bucket, Key=key)
            )
        except ClientError as exc:
            if _missing(exc):
                return None
            raise Unavailable(f"the recording store answered {_reason(exc)}") from None
        except BotoCoreError as exc:
            raise Unavailable(f"the recording store is unreachable: {exc}") from None
        return head["ContentLength"]

    async def read(self, key: str, first: int, last: int) -> AsyncIterator[bytes]:
        """Bytes `first` to `last` (inclusive) of the object."""
        try:
            answer = await self._call(
                lambda: self._client.get_object(
                    Bucket=self.settings.bucket, Key=key, Range=f"bytes={first}-{last}"
                )
            )
        except (BotoCoreError, ClientError) as exc:
            raise Unavailable(f"the recording store did not answer: {_reason(exc)}") from None
        body = answer["Body"]
        try:
            while chunk := await self._call(lambda: body.read(CHUNK_BYTES)):
                yield chunk
        finally:
            body.close()

    async def listing(self) -> list[tuple[str, float]]:
        """Every object under the prefix: its key and LastModified (epoch seconds)."""

        def every_page() -> list[tuple[str, float]]:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.settings.bucket, Prefix=self.settings.prefix
            )
            return [
                (item["Key"], item["LastModified"].timestamp())
                for page in pages
                for item in page.get("Contents", [])
            ]

        return await self._call(every_page)

    async def delete(self, keys: list[str]) -> None:
        # DeleteObjects takes at most 1000 keys.
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]

            def delete(batch: list[str] = batch) -> None:
                self._client.delete_objects(
                    Bucket=self.settings.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch]},
                )

            await self._call(delete)


def stored_objects(listing: list[tuple[str, float]], prefix: str) -> list[StoredRecording]:
    """The recordings among a listing of the prefix; other objects are not ours."""
    found = []
    for key, modified_at in listing:
        name = key.removeprefix(prefix)
        if "/" in name or not name.endswith(_SUFFIX):
            continue
        session_id = name.removesuffix(_SUFFIX)
        try:
            check_session_id(session_id)
        except InvalidArgument:
            continue
        found.append(StoredRecording(session_id, modified_at))
    return found


class ObjectRecordingStore:
    """Recordings on disk while recorded, in the bucket once ended."""

    def __init__(
        self, disk: RecordingStore, bucket: RecordingBucketClient, retry_s: float = 30.0
    ) -> None:
        self._disk = disk
        self._bucket = bucket
        self._retry_s = retry_s
        self._wake = asyncio.Event()

    @property
    def active(self) -> set[str]:
        return self._disk.active

    def path_for(self, session_id: str) -> Path:
        return self._disk.path_for(session_id)

    def ended(self, session_id: str) -> None:
        self._wake.set()

    def _key(self, session_id: str) -> str:
        return self._bucket.settings.key_for(check_session_id(session_id))

    async def size(self, session_id: str) -> int:
        try:
            return await self._disk.size(session_id)
        except NotFound as exc:
            from_disk = exc
        size = await self._bucket.size(self._key(session_id))
        if size is None:
            raise from_disk
        return size

    async def read(self, session_id: str, offset: int, length: int) -> AsyncIterator[bytes]:
        check_span(offset, length)
        if self.path_for(session_id).exists():
            # Not uploaded yet (or being recorded); once open, the file is read
            # to its end even if the upload removes it meanwhile.
            try:
                async for chunk in self._disk.read(session_id, offset, length):
                    yield chunk
                return
            except NotFound:
                pass
        size = await self.size(session_id)
        last = size - 1 if length == 0 else min(size, offset + length) - 1
        if offset > last:
            return
        async for chunk in self._bucket.read(self._key(session_id), offset, last):
            yield chunk

    async def upload_finished(self) -> int:
        """Upload each ended recording still on disk, then remove it; stop at
        the first failure (the store is likely down: the rest waits too).
        Returns how many went up."""
        done = 0
        for path in self._disk.finished():
            session_id = path.stem
            try:
                await self._bucket.upload(path, self._key(session_id))
            # upload_file wraps the store's refusals in S3UploadFailedError.
            except (BotoCoreError, ClientError, S3UploadFailedError, OSError) as exc:
                if not path.exists():
                    continue
                log.warning(
                    "recording of session %s not uploaded (kept on disk, retried in %g s): %s",
                    session_id,
                    self._retry_s,
                    _reason(exc),
                )
                return done
            path.unlink(missing_ok=True)
            done += 1
            log.info("recording of session %s uploaded to the bucket", session_id)
        return done

    async def sweep(self, now: float) -> list[str]:
        """Delete the objects (and files) past retention; return their sessions."""
        gone = set(self._disk.sweep(now))
        prefix = self._bucket.settings.prefix
        old = expired(
            stored_objects(await self._bucket.listing(), prefix),
            now,
            self._disk.retention_s,
            self.active,
        )
        if old:
            await self._bucket.delete([self._key(session_id) for session_id in old])
            log.info("removed %d recordings past retention from the bucket", len(old))
        return sorted(gone | set(old))

    async def run(self) -> None:
        next_sweep = 0.0
        while True:
            self._wake.clear()
            try:
                await self.upload_finished()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + sweep_interval(self._disk.retention_s)
                    await self.sweep(time.time())
            except (BotoCoreError, ClientError) as exc:
                log.warning("the recording bucket's sweep failed: %s", _reason(exc))
            except Exception:
                # Uploads and retention go on: one bad pass must not end them.
                log.exception("the recording store's upkeep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._retry_s)

    async def close(self) -> None:
        """One last upload of what ended, at the service's stop."""
        await self.upload_finished()
