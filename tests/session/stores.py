"""The session stores, as a parametrized fixture for contract tests."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.runtime.limits import MAX_STEP_EVENTS_KEPT
from services.session.etcd_store import EtcdStore
from services.session.sqlite_store import SqliteStore
from services.session.store import MemoryStore, SessionStore

STORE_KINDS = ["memory", "sqlite", "etcd"]


@contextlib.asynccontextmanager
async def open_store(
    kind: str, request: pytest.FixtureRequest, steps_kept: int = MAX_STEP_EVENTS_KEPT
) -> AsyncIterator[SessionStore]:
    """A store of `kind` keeping `steps_kept` steps per session, closed after."""
    opened: SessionStore
    if kind == "memory":
        opened = MemoryStore(steps_kept)
    elif kind == "sqlite":
        state_dir: Path = request.getfixturevalue("tmp_path")
        opened = SqliteStore.open(state_dir / "session-state", steps_kept)
    else:
        endpoint: str = request.getfixturevalue("etcd_endpoint")
        # A fresh prefix per test keeps tests apart on the one shared etcd
        # (the step logs go beside it: /baton-test/<hex>/steps/).
        prefix = f"/baton-test/{uuid.uuid4().hex}/sessions/"
        opened = await EtcdStore.connect([endpoint], prefix=prefix, steps_kept=steps_kept)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    async with open_store(request.param, request) as opened:
        yield opened
