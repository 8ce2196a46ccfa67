"""Fixtures and helpers shared by every test tier."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deploy.service_user import DEFAULT_USER
from services.runtime import processes
from services.runtime.internal_auth import InternalToken

# The deployment credential every test stack's services share (BATON_INTERNAL_TOKEN).
INTERNAL_TOKEN = InternalToken("internal-token-for-the-tests-0123456789")


def require_binary(name: str, debian_package: str) -> str:
    """Path of `name`, found as the services find it; a failure when it is missing.

    Never a skip: `make test` installs every program the tests run
    (deploy/debian-packages.txt), so a missing one is a missing install step.
    """
    try:
        return processes.require_binary(name, debian_package)
    except processes.MissingBinary as exc:
        pytest.fail(f"{exc.message}; it belongs in deploy/debian-packages.txt")


async def eventually(predicate: Callable[[], bool], within_s: float = 5) -> None:
    """Return once `predicate()` holds; fail after `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_etcd(data_dir: Path, client_port: int, peer_port: int) -> subprocess.Popen[bytes]:
    """A single-member etcd (Debian's etcd-server) on the given loopback ports."""
    binary = require_binary("etcd", "etcd-server")
    client_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    return subprocess.Popen(
        [
            binary,
            "--name=baton-test",
            f"--data-dir={data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=baton-test={peer_url}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 10) -> None:
    """SIGTERM (so it cleans up after itself), then SIGKILL after `grace_s`."""
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_etcd(process: subprocess.Popen[bytes]) -> None:
    stop_process(process)


@pytest.fixture(scope="session")
def etcd_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real etcd on free loopback ports, removed afterwards."""
    data_dir = tmp_path_factory.mktemp("etcd")
    client_port = free_port()
    process = start_etcd(data_dir, client_port, free_port())
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(f"etcd exited with status {process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", client_port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("etcd did not start listening within 20 s")
                time.sleep(0.05)
        yield f"127.0.0.1:{client_port}"
    finally:
        stop_etcd(process)
        shutil.rmtree(data_dir, ignore_errors=True)


def searchable(directory: Path) -> None:
    """Let other users through `directory` (not list it)."""
    directory.chmod(directory.stat().st_mode | 0o001)


def services_own(directory: Path) -> None:
    """Started as root, `make run`'s services run as user baton
    (deploy/service_user.py): a directory they write must be theirs."""
    if os.geteuid() == 0:
        user = pwd.getpwnam(DEFAULT_USER)
        os.chown(directory, user.pw_uid, user.pw_gid)


@pytest.fixture(scope="session", autouse=True)
def browsers_reach_temp_dirs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Run as root, each Chromium runs as its display's own user
    (services/automation/browser_user.py), which must get through pytest's temp
    dirs (mode 0700) to its profile: let others search them, not list them."""
    base = tmp_path_factory.getbasetemp()
    searchable(base)
    searchable(base.parent)


@pytest.fixture(autouse=True)
def browsers_reach_tmp_path(request: pytest.FixtureRequest) -> None:
    if "tmp_path" in request.fixturenames:
        searchable(request.getfixturevalue("tmp_path"))
