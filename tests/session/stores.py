"""The session stores, as a parametrized fixture for contract tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.session.etcd_store import EtcdStore
from services.session.sqlite_store import SqliteStore
from services.session.store import MemoryStore, SessionStore


@pytest.fixture(params=["memory", "sqlite", "etcd"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    if request.param == "memory":
        memory = MemoryStore()
        yield memory
        await memory.close()
        return
    if request.param == "sqlite":
        state_dir: Path = request.getfixturevalue("tmp_path")
        sqlite = SqliteStore.open(state_dir / "session-state")
        yield sqlite
        await sqlite.close()
        return
    endpoint: str = request.getfixturevalue("etcd_endpoint")
    # A fresh prefix per test keeps tests apart on the one shared etcd.
    etcd = await EtcdStore.connect([endpoint], prefix=f"/baton-test/{uuid.uuid4().hex}/")
    yield etcd
    await etcd.close()
