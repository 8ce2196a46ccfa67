"""`make run`'s launcher in a test: started, read, called over REST, inspected in /proc."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.conftest import free_port, searchable, services_own

TOKEN = "crash-test-token"


@contextlib.contextmanager
def launched_until_ready(
    env: Mapping[str, str], timeout: float = 90
) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`python -m deploy.local_stack` with `env`, its output read up to its "all
    services ready" line (or its end, or `timeout`); killed if still running after."""
    launcher = subprocess.Popen(
        [sys.executable, "-m", "deploy.local_stack"],
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert launcher.stdout is not None
    output: list[str] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = launcher.stdout.readline()
            if not line:
                break
            output.append(line)
            if "all services ready" in line:
                break
        yield launcher, output
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        launcher.stdout.close()


def process_tree(pid: int) -> set[int]:
    """`pid` and every live process below it, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def real_uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def listening_inodes(pids: set[int]) -> set[str]:
    """Inodes of the TCP sockets in LISTEN these processes hold."""
    held = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    held.add(target[8:-1])
        except OSError:
            continue
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                listening.add(fields[9])
    return held & listening


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class LauncherStack:
    def __init__(self, root: Path, displays: str, vnc_ports: str, **extra: str) -> None:
        self.root = root
        # Short: Chromium's singleton socket, TMPDIR/baton-tmp-*/org.chromium.Chromium.*/
        # SingletonSocket, must fit in a unix socket path (108 bytes); under pytest's
        # tmp_path it does not ("Socket path too long"), and Chromium exits.
        self.tmp = Path(tempfile.mkdtemp(prefix="bt-", dir="/tmp"))
        # The browsers' own users go through both to their profiles and TMPDIRs
        # (services/automation/browser_user.py).
        searchable(self.tmp)
        searchable(root)
        services_own(self.tmp)
        self.profiles = root / "profiles"
        self.edge_port = free_port()
        self.env = {
            **os.environ,
            "TMPDIR": str(self.tmp),
            "BATON_EDGE_PORT": str(self.edge_port),
            "BATON_SESSION_PORT": str(free_port()),
            "BATON_DISPLAY_PORT": str(free_port()),
            "BATON_AUTOMATION_PORT": str(free_port()),
            "BATON_API_TOKEN": TOKEN,
            "BATON_DISPLAY_NUMBERS": displays,
            "BATON_VNC_PORTS": vnc_ports,
            "BATON_DISPLAY_STATE_DIR": str(root / "display-state"),
            "BATON_SESSION_STATE_DIR": str(root / "session-state"),
            "BATON_PROFILE_ROOT": str(self.profiles),
            "BATON_LOG_LEVEL": "WARNING",
            **extra,
        }
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "deploy.local_stack"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for_line(self, text: str, timeout: float, after: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if text in line:
                    return line
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no line with {text!r}:\n" + "".join(self.lines[-60:]))

    def service_pid(self, name: str) -> int:
        for pid in process_tree(self.process.pid):
            if cmdline(pid)[1:3] == ["-m", f"services.{name}"]:
                return pid
        raise AssertionError(f"no {name} service running")

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.edge_port}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                raw = reply.read()
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{method} {path}: {error.code} {error.read()!r}") from None
        return json.loads(raw) if raw else None

    def create_session(
        self, timeout: float = 30, wait_ms: int = 0, waits_ms: tuple[int, ...] = ()
    ) -> dict[str, Any]:
        """A new session, waiting while the stack answers 503 (a service coming back).

        With `wait_ms`, its task runs that long (a wait step) instead of opening a URL;
        with `waits_ms`, one wait step each.
        """
        body: dict[str, Any] = {"task": "look", "url": "http://127.0.0.1:9/", "maxSteps": 1}
        waits = waits_ms or ((wait_ms,) if wait_ms else ())
        if waits:
            body = {"task": "wait", "steps": [{"action": "wait", "ms": ms} for ms in waits]}
        deadline = time.monotonic() + timeout
        while True:
            try:
                session: dict[str, Any] = self.request("POST", "/api/browser-session", body)
                return session
            except AssertionError as error:
                if ": 503 " not in str(error) or time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._reader.join(5)
            if self.process.stdout is not None:
                self.process.stdout.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
