"""Fixtures for the automation tests: one Xvfb, one page server, one gRPC server per module."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from baton.automation.v1 import automation_pb2 as pb
from baton.automation.v1 import automation_pb2_grpc as pb_grpc
from baton.display.v1 import display_pb2
from services.automation.browser_user import BrowserUsers
from services.automation.chromium import PlaywrightDriver
from services.automation.server import start_automation_server
from services.automation.settings import AutomationSettings, LlmSettings
from services.runtime.grpc_client import open_channel
from tests.automation.scripted_llm import ScriptedLlm, scripted_llm
from tests.automation.support import PageServer, page_server, private_xvfb
from tests.conftest import INTERNAL_TOKEN, require_binary

PAUSE_GRACE_MS = 500


@pytest_asyncio.fixture(loop_scope="module")
async def driver(tmp_path: Path) -> AsyncIterator[PlaywrightDriver]:
    """A Playwright driver of its own for one test (real Chromium, sandboxed users)."""
    driver = PlaywrightDriver(
        "/usr/bin/chromium", tmp_path, dict(os.environ), BrowserUsers.for_this_process(300000)
    )
    await driver.start()
    try:
        yield driver
    finally:
        await driver.stop()


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    require_binary("Xvfb", "xvfb")
    require_binary("chromium", "chromium")
    with private_xvfb() as name:
        yield name


@pytest.fixture(scope="module")
def pages() -> Iterator[PageServer]:
    with page_server() as server:
        yield server


@pytest.fixture
def site(pages: PageServer) -> PageServer:
    pages.recorder.clear()
    return pages


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLlm]:
    with scripted_llm() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def profile_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("profiles")


@dataclass
class Automation:
    stub: pb_grpc.AutomationServiceAsyncStub
    display: str
    profile_root: Path

    def task(self, session_id: str, **fields: object) -> pb.StartTaskRequest:
        return pb.StartTaskRequest(
            session_id=session_id,
            display=self.display,
            viewport=display_pb2.Viewport(width=1280, height=720),
            **fields,  # type: ignore[arg-type]
        )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def automation(
    display: str, profile_root: Path, llm: ScriptedLlm
) -> AsyncIterator[Automation]:
    settings = AutomationSettings(
        internal_token=INTERNAL_TOKEN,
        pause_grace_ms=PAUSE_GRACE_MS,
        action_timeout_ms=10000,
        profile_root=profile_root,
        llm=LlmSettings(base_url=llm.base_url, model="scripted-model", api_key="test-key"),
    )
    running = await start_automation_server(settings)
    channel = open_channel(f"127.0.0.1:{running.port}", INTERNAL_TOKEN)
    try:
        yield Automation(pb_grpc.AutomationServiceStub(channel), display, profile_root)
    finally:
        await channel.close(grace=None)
        await running.stop(grace=1)


@dataclass
class TaskStream:
    """Reads a StartTask stream in the background and lets a test wait for events."""

    events: list[pb.StartTaskResponse] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None
    error: BaseException | None = None

    @classmethod
    def open(
        cls, stub: pb_grpc.AutomationServiceAsyncStub, request: pb.StartTaskRequest
    ) -> TaskStream:
        stream = cls()
        stream.reader = asyncio.ensure_future(stream._read(stub.StartTask(request)))
        return stream

    async def _read(self, call: AsyncIterable[pb.StartTaskResponse]) -> None:
        try:
            async for event in call:
                self.events.append(event)
                self.changed.set()
        except BaseException as error:
            self.error = error
            raise
        finally:
            self.changed.set()

    async def wait_for(
        self, matches: Callable[[pb.StartTaskResponse], bool], within_s: float = 30
    ) -> pb.StartTaskResponse:
        deadline = time.monotonic() + within_s
        while True:
            for event in self.events:
                if matches(event):
                    return event
            if self.reader is not None and self.reader.done():
                raise AssertionError(f"stream ended without the event: {self.events}")
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"event did not arrive: {self.events}")
            await asyncio.wait_for(self.changed.wait(), remaining)

    async def final(self, within_s: float = 30) -> pb.TaskStatusChanged:
        finished = (pb.TASK_STATUS_COMPLETED, pb.TASK_STATUS_FAILED, pb.TASK_STATUS_CANCELLED)
        event = await self.wait_for(
            lambda e: e.HasField("status_changed") and e.status_changed.status in finished, within_s
        )
        assert self.reader is not None
        await asyncio.wait_for(self.reader, 10)
        return event.status_changed

    def steps(self) -> list[pb.StepEvent]:
        return [e.step for e in self.events if e.HasField("step")]


def step_is(index: int, status: pb.StepStatus.ValueType) -> Callable[[pb.StartTaskResponse], bool]:
    return lambda e: e.HasField("step") and e.step.index == index and e.step.status == status
