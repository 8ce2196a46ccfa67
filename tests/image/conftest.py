"""The container image built and run for real with podman (make image-test;
deploy/README.md, "Image and compose"). Root only: podman runs rootful here, in
network namespaces the tests make. The image is built once per run by
deploy/build-image.sh (its base image and podman's layer cache are kept between
runs); containers, pods, namespaces and volumes are not."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parents[2]
TAG = "localhost/baton:test"
# The containers.conf of our build machines: runc, cgroupfs, file events, ulimits.
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "deploy" / "containers.conf")}
# The uid every service runs as in the image (deploy/Dockerfile), and the
# browsers' (300000 + display, the subordinate ids); podman makes no user
# namespace here, so they are these uids on the host too.
BATON_UID = 10001
BROWSER_UIDS = range(300000, 300000 + 65536)


def podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    """`podman args...` with our containers.conf; its standard output."""
    done = subprocess.run(
        ["podman", *args],
        env=PODMAN_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {done.returncode}\n{done.stderr[-2000:]}")
    return done.stdout


def healthy(container: str) -> tuple[bool, str]:
    """The image's HEALTHCHECK, run once now in `container` (podman healthcheck run)."""
    done = subprocess.run(
        ["podman", "healthcheck", "run", container],
        env=PODMAN_ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def container_processes() -> list[tuple[int, int, str]]:
    """(pid, uid, command) of every process podman runs on this machine: those
    in a libpod cgroup (containers and their conmon; other helpers' stacks on
    this machine run Chromium under the same uids, outside any). Zombies are
    not running: an exited conmon is reparented to PID 1, which may not reap."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroups = (entry / "cgroup").read_text()
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "/libpod" not in cgroups or "\nState:\tZ" in status:
            continue
        uid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:")))
        found.append((int(entry.name), uid, command.strip()))
    return found


def settled_container_processes(within_s: float = 30) -> list[tuple[int, int, str]]:
    """`container_processes()` once podman's own clean-up after containers that
    exited (`podman container cleanup`, started by conmon, for a few seconds) is
    over; what is still there after `within_s` otherwise."""
    deadline = time.monotonic() + within_s
    while (found := container_processes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def containers() -> list[str]:
    return podman("ps", "-a", "--format", "{{.Names}}").split()


@pytest.fixture(scope="session")
def image() -> Iterator[str]:
    """deploy/build-image.sh's image, built (from podman's cache when it can) once."""
    if os.geteuid() != 0:
        pytest.fail("make image-test runs podman as root: run it as root (CI does)")
    # From deploy/test-packages.txt (tests/deploy/test_install_list.py).
    require_binary("podman", "podman")
    require_binary("buildah", "buildah")
    require_binary("runc", "runc")
    require_binary("debootstrap", "debootstrap")
    require_binary("ip", "iproute2")
    build = subprocess.run(
        [str(ROOT / "deploy" / "build-image.sh"), TAG],
        env=PODMAN_ENV,
        capture_output=True,
        text=True,
        timeout=660,
        check=False,
    )
    assert build.returncode == 0, f"build-image.sh failed:\n{build.stderr[-4000:]}"
    yield TAG


def run_argv(image: str, name: str, network: str, module: str, **env: str) -> Sequence[str]:
    """`podman run -d` of one service's container, as deploy/k8s runs it."""
    env_args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    return [
        "run",
        "-d",
        "--name",
        name,
        "--network",
        network,
        "--read-only",
        *env_args,
        image,
        "/opt/baton/.venv/bin/python",
        "-m",
        module,
    ]
