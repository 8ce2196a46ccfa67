"""Reading a recorded session's video from the worker host that holds it
(services/display/README.md, "Recording"): the edge reaches no worker itself.

When that host is gone, another live host may still serve it: a host whose
display service shares the S3-compatible bucket reads it from there (a host
without one answers NOT_FOUND, and the next is asked)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from baton.display.v1 import display_pb2
from services.runtime.errors import FailedPrecondition, NotFound, Unavailable
from services.session.model import Actor
from services.session.records import SessionRecords
from services.session.workers import WorkerDirectory


class RecordingReader:
    def __init__(self, records: SessionRecords, directory: WorkerDirectory) -> None:
        self._records = records
        self._directory = directory

    async def read(
        self, actor: Actor, session_id: str, offset: int, length: int
    ) -> AsyncIterator[display_pb2.ReadRecordingResponse]:
        """The recording's size, then its bytes; for its owner or an operator."""
        session = (await self._records.get_owned(actor, session_id)).session
        recording = session.recording
        if recording is None:
            raise NotFound(f"session {session_id} was not recorded")
        # Any epoch: the file is on the host's disk and outlives a restart.
        host = self._directory.host(recording.host_id)
        if host is not None:
            async for message in host.display.read_recording(session_id, offset, length):
                yield message
            return
        for view in self._directory.live_hosts():
            messages = view.host.display.read_recording(session_id, offset, length)
            try:
                first = await anext(messages)
            except (NotFound, FailedPrecondition, Unavailable, StopAsyncIteration):
                continue
            yield first
            async for message in messages:
                yield message
            return
        raise Unavailable(
            f"the recording of session {session_id} is on worker host "
            f"{recording.host_id}, which is not reachable now (and no live host "
            "reads it from a shared recording bucket)"
        )
