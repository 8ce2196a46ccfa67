"""The host's recordings: one fragmented MP4 per recorded session, on this
host's disk, kept for the retention period (README.md, "Recording").

Layout: `<recordings dir>/<session id>.mp4`. The dir is not the state dir:
a clean stop removes that, and recordings outlive the service's runs.

`Recordings` is what the slot pool and the servicer use; `RecordingStore` keeps
recordings on disk only, `ObjectRecordingStore` (recording_store_s3.py) moves
finished ones to an S3-compatible bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from services.runtime.errors import InvalidArgument, NotFound
from services.runtime.session_ids import check_session_id

log = logging.getLogger(__name__)

_SUFFIX = ".mp4"
CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class StoredRecording:
    session_id: str
    modified_at: float


def sweep_interval(retention_s: float) -> float:
    """How often the stores look for recordings past retention."""
    return min(retention_s, 60.0)


def check_span(offset: int, length: int) -> None:
    if offset < 0 or length < 0:
        raise InvalidArgument("offset and length must not be negative")


def expired(
    recordings: Iterable[StoredRecording], now: float, retention_s: float, active: set[str]
) -> list[str]:
    """The sessions whose recording is past retention: not written for
    `retention_s` seconds, and not being recorded now."""
    return sorted(
        r.session_id
        for r in recordings
        if r.session_id not in active and now - r.modified_at > retention_s
    )


class Recordings(Protocol):
    @property
    def active(self) -> set[str]:
        """Sessions whose ffmpeg runs now: never expired, read from disk."""
        ...

    def path_for(self, session_id: str) -> Path:
        """Where ffmpeg writes the session's recording."""
        ...

    def ended(self, session_id: str) -> None:
        """The session's ffmpeg has written its last fragment and gone."""
        ...

    async def size(self, session_id: str) -> int: ...

    def read(self, session_id: str, offset: int, length: int) -> AsyncIterator[bytes]: ...

    async def run(self) -> None:
        """The store's upkeep (retention, uploads) until cancelled."""
        ...


class RecordingStore:
    def __init__(self, path: Path, retention_s: float, host_id: str) -> None:
        self.path = path
        self._retention_s = retention_s
        self._host_id = host_id
        # Sessions whose ffmpeg runs now: never expired, marked "recording".
        self.active: set[str] = set()

    @property
    def retention_s(self) -> float:
        return self._retention_s

    def open(self) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path_for(self, session_id: str) -> Path:
        return self.path / f"{check_session_id(session_id)}{_SUFFIX}"

    def _stored(self) -> list[StoredRecording]:
        found = []
        for entry in self.path.glob(f"*{_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                found.append(StoredRecording(entry.stem, entry.stat().st_mtime))
        return found

    def sweep(self, now: float) -> list[str]:
        """Remove the recordings past retention; return their sessions."""
        gone = expired(self._stored(), now, self._retention_s, self.active)
        for session_id in gone:
            with contextlib.suppress(FileNotFoundError):
                (self.path / f"{session_id}{_SUFFIX}").unlink()
        if gone:
            log.info("removed %d recordings past retention", len(gone))
        return gone

    async def run(self) -> None:
        while True:
            # File times are wall-clock seconds.
            self.sweep(time.time())
            await asyncio.sleep(sweep_interval(self._retention_s))

    def ended(self, session_id: str) -> None:
        """Nothing to do: the file stays where ffmpeg wrote it."""

    def finished(self) -> list[Path]:
        """The recordings on disk that no ffmpeg writes any more."""
        return sorted(
            self.path / f"{r.session_id}{_SUFFIX}"
            for r in self._stored()
            if r.session_id not in self.active
        )

    def not_found(self, session_id: str) -> NotFound:
        return NotFound(
            f"host {self._host_id} holds no recording of session {session_id} "
            "(not recorded, or removed after BATON_RECORDING_RETENTION_S)"
        )

    async def size(self, session_id: str) -> int:
        try:
            return self.path_for(session_id).stat().st_size
        except FileNotFoundError:
            raise self.not_found(session_id) from None

    async def read(self, session_id: str, offset: int, length: int) -> AsyncIterator[bytes]:
        """The bytes from `offset`, at most `length` (0: to the end as it is now)."""
        check_span(offset, length)
        try:
            file = self.path_for(session_id).open("rb")
        except FileNotFoundError:
            raise self.not_found(session_id) from None
        with file:
            size = os.fstat(file.fileno()).st_size
            end = size if length == 0 else min(size, offset + length)
            file.seek(offset)
            position = offset
            while position < end:
                chunk = await asyncio.to_thread(file.read, min(CHUNK_BYTES, end - position))
                if not chunk:
                    return
                position += len(chunk)
                yield chunk
