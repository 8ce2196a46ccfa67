"""The container image built and run for real with podman (make image-test;
deploy/README.md, "Image and compose"). Root only: podman runs rootful here, in
network namespaces the tests make. The image is built once per run by
deploy/build-image.sh (its base image and podman's layer cache are kept between
runs); containers, pods, namespaces and volumes are not."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
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


def service_args(image: str, network: str, module: str, *options: str, **env: str) -> Sequence[str]:
    """`podman run`'s options (`options` among them) and command for one
    service's container, as deploy/k8s runs it."""
    env_args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    return [
        "--network",
        network,
        "--read-only",
        *options,
        *env_args,
        image,
        "/opt/baton/.venv/bin/python",
        "-m",
        module,
    ]


# The end of each container's log that a failure shows.
REPORT_LOG_LINES = 200


def container_report(names: Iterable[str]) -> str:
    """Each container's state (podman inspect: status, exit code, OOMKilled,
    error, restarts) and the end of its log (podman logs: stdout and stderr, where
    the services log), for a test's failure output. Never raises: it is written
    while a failure is on its way."""
    parts = []
    for name in names:
        try:
            parts.append(_one_container_report(name))
        except Exception as exc:
            parts.append(f"--- {name}: no report ({exc!r})")
    return "\n".join(parts)


def _one_container_report(name: str) -> str:
    inspected = json.loads(podman("inspect", "--type", "container", name, check=False) or "[]")
    if not inspected:
        return f"--- {name}: no such container"
    state = inspected[0]["State"]
    health = (state.get("Health") or state.get("Healthcheck") or {}).get("Status") or "-"
    logs = subprocess.run(
        ["podman", "logs", "--tail", str(REPORT_LOG_LINES), name],
        env=PODMAN_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=60,
        check=False,
    )
    return (
        f"--- {name}: {state['Status']}, exit code {state['ExitCode']}, "
        f"OOMKilled {state['OOMKilled']}, error {state['Error']!r}, "
        f"restarts {inspected[0].get('RestartCount', 0)}, health {health}, "
        f"started {state['StartedAt']}, finished {state['FinishedAt']}\n"
        f"(its log's last {REPORT_LOG_LINES} lines)\n{logs.stdout.rstrip()}"
    )


def exited_containers(names: Iterable[str]) -> list[str]:
    """Those of `names` whose container is not running (exited, or gone), or
    was restarted (its restart policy), so has exited at least once."""
    names = list(names)
    if not names:
        return []
    format_ = "{{.Name}} {{.State.Status}} {{.RestartCount}}"
    listed = podman("inspect", "--type", "container", "--format", format_, *names, check=False)
    running = {
        name
        for name, status, restarts in map(str.split, listed.splitlines())
        if status == "running" and restarts == "0"
    }
    return [name for name in names if name not in running]


class Containers:
    """The containers a test runs (see `watched_containers`)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        # `podman wait` of each detached container: it returns when that exits.
        self._exits: dict[str, subprocess.Popen[str]] = {}

    def run(self, name: str, *args: str) -> None:
        """`podman run -d --name name args...`; its exit is watched from then on."""
        self.names.append(name)
        podman("run", "-d", "--name", name, *args)
        self._exits[name] = subprocess.Popen(
            ["podman", "wait", "--condition", "exited", name],
            env=PODMAN_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run_once(self, name: str, *args: str) -> str:
        """`podman run --name name args...` to its end; its standard output."""
        self.names.append(name)
        return podman("run", "--name", name, *args)

    def exited(self, within_s: float = 0) -> list[str]:
        """The detached containers that have exited (their `podman wait` has
        answered, or ended), once one has or `within_s` seconds have passed."""
        waits = {wait.stdout: name for name, wait in self._exits.items() if wait.stdout}
        ready, _, _ = select.select(list(waits), [], [], within_s)
        done = {waits[out] for out in ready}
        return [name for name in self._exits if name in done]

    def remove(self) -> list[str]:
        """Every container removed (stopped first, 5 s grace); those still listed after."""
        for wait in self._exits.values():
            wait.kill()
            wait.communicate()
        if self.names:
            podman("rm", "-f", "-t", "5", *self.names, check=False)
        return sorted(set(self.names) & set(containers()))


@contextlib.contextmanager
def watched_containers() -> Iterator[Containers]:
    """Containers the block runs (`Containers.run`, `run_once`), removed after it
    whatever happened. Before that, when the block fails, every one's state and
    log is added to its failure; when it passes but a detached container exited
    meanwhile, the test fails with that one's."""
    running = Containers()
    try:
        yield running
    except BaseException as exc:
        exc.add_note(container_report(running.names))
        raise
    else:
        if exited := running.exited():
            raise AssertionError(f"exited during the test:\n{container_report(exited)}")
    finally:
        left = running.remove()
    assert not left, f"left after podman rm: {left}"
