"""`make cluster`'s launcher as the tests start it, and what they do to its processes.

`Launcher` runs `python -m deploy.cluster` and collects its lines (standard
output: the address book; standard error: the services' logs and the
supervisor's restart lines). `RunningCluster` reads the address book and finds
the processes behind it, so a test can kill an edge, a session replica, a
worker host or an etcd member, and await what the launcher does about it.

Only one cluster runs per machine (fixed namespace names, the 10.200.0.0/24
bridge): tests/cluster/conftest.py starts one for the package, and
tests/deploy/test_cluster_launcher.py starts its own after it has stopped.
Displays 1300-1309 and VNC ports 19500-19509 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from deploy import netns
from services.runtime.etcd_client import connect_first
from services.runtime.worker_registry import PREFIX, WorkerRecord
from tests.conftest import eventually
from tests.deploy.stack_process import alive, cmdline, process_tree

GATEWAY = "10.200.0.1"
LINE = re.compile(r"baton-cluster: .*")
WORKER = re.compile(r"baton-cluster: worker (w\d) (10\.200\.0\.\d+) pgid (\d+)")
EDGE = re.compile(r"baton-cluster: edge (http://127\.0\.0\.1:(\d+))/#token=(\S+)")
READY = "baton-cluster: ready"


def launcher_env(run_dir: Path, edge_ports: list[int], api_token: str) -> dict[str, str]:
    """The environment the launcher tests start it with (small hosts, our numbers)."""
    return {
        **os.environ,
        "BATON_CLUSTER_EDGE_PORTS": ",".join(map(str, edge_ports)),
        "BATON_CLUSTER_RUN_DIR": str(run_dir),
        "BATON_DISPLAY_NUMBERS": "1300-1309",
        "BATON_VNC_PORTS": "19500-19509",
        "BATON_MAX_SLOTS": "2",
        "BATON_WARM_SLOTS": "0",
        "BATON_API_TOKEN": api_token,
        "BATON_LOG_LEVEL": "WARNING",
    }


class Launcher:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.run_dir = Path(env["BATON_CLUSTER_RUN_DIR"])
        self.process = subprocess.Popen(
            [sys.executable, "-m", "deploy.cluster"],
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._readers = [
            threading.Thread(
                target=self._read, args=(self.process.stdout, self.lines), daemon=True
            ),
            threading.Thread(
                target=self._read, args=(self.process.stderr, self.errors), daemon=True
            ),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: object, into: list[str]) -> None:
        # Ends at EOF, or when close() closes the stream under a reader that
        # a leaked child keeps waiting (the test then fails on the leak).
        with contextlib.suppress(ValueError, OSError):
            for line in stream:  # type: ignore[attr-defined]
                into.append(line.rstrip("\n"))

    def _failure(self, what: str) -> AssertionError:
        return AssertionError(
            f"{what}; stdout:\n"
            + "\n".join(self.lines)
            + "\nstderr:\n"
            + "\n".join(self.errors[-40:])
        )

    def wait_for(self, text: str, timeout: float, count: int = 1) -> None:
        """Until standard output has `count` lines equal to `text`."""
        deadline = time.monotonic() + timeout
        while self.lines.count(text) < count:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise self._failure(f"no {text!r} line (#{count})")
            time.sleep(0.1)

    async def wait_for_error_line(self, pattern: str, after: int, within_s: float) -> str:
        """The first standard-error line from index `after` on matching `pattern`."""
        deadline = time.monotonic() + within_s
        compiled = re.compile(pattern)
        while True:
            for line in self.errors[after:]:
                if compiled.search(line):
                    return line
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise self._failure(f"no stderr line matching {pattern!r}")
            await asyncio.sleep(0.1)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for reader in self._readers:
            reader.join(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def remove_leftovers() -> None:
    """Remove the namespaces and links a launcher left (none when it stopped well)."""

    async def remove() -> None:
        await netns.remove(*await netns.leftovers())

    asyncio.run(remove())


def environ_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass(frozen=True)
class Worker:
    host_id: str
    address: str
    pgid: int


class RunningCluster:
    """A launcher past its `ready` line: its address book and its processes."""

    def __init__(self, launcher: Launcher) -> None:
        self.launcher = launcher
        edges = [m for m in map(EDGE.fullmatch, launcher.lines) if m]
        self.edges = [m[1] for m in edges]
        self.api_token = edges[0][3]
        self.gateway = next(
            line.rsplit(" ", 1)[1] for line in launcher.lines if " gateway " in line
        )
        session = self._service_pids("services.session")[0]
        self.etcd_endpoints = environ_of(session)["BATON_ETCD_ENDPOINTS"].split(",")

    # -- the address book ---------------------------------------------------

    def workers(self) -> dict[str, Worker]:
        """Each host's latest `worker` line (a host started again has a new pgid)."""
        found = {}
        for match in map(WORKER.fullmatch, self.launcher.lines):
            if match:
                found[match[1]] = Worker(match[1], match[2], int(match[3]))
        return found

    def _service_pids(self, module: str) -> list[int]:
        """Live processes of `module` under the launcher, in start order."""
        pids = [
            pid
            for pid in process_tree(self.launcher.process.pid)
            if cmdline(pid)[1:3] == ["-m", module] and alive(pid)
        ]
        return sorted(pids)

    def edge_pid(self, index: int) -> int:
        port = self.edges[index].rsplit(":", 1)[1]
        pids = [
            p
            for p in self._service_pids("services.edge")
            if environ_of(p).get("BATON_EDGE_PORT") == port
        ]
        assert len(pids) == 1, pids
        return pids[0]

    def session_address(self, index: int) -> str:
        """Session replica `index`'s gRPC address (session-1 is index 0)."""
        state_dir = str(self.launcher.run_dir / f"session-{index + 1}")
        for pid in self._service_pids("services.session"):
            env = environ_of(pid)
            if env.get("BATON_SESSION_STATE_DIR") == state_dir:
                return f"127.0.0.1:{env['BATON_SESSION_PORT']}"
        raise AssertionError(f"session replica {index + 1} is not running")

    def session_pid(self, index: int) -> int:
        state_dir = str(self.launcher.run_dir / f"session-{index + 1}")
        pids = [
            p
            for p in self._service_pids("services.session")
            if environ_of(p).get("BATON_SESSION_STATE_DIR") == state_dir
        ]
        assert len(pids) == 1, pids
        return pids[0]

    def etcd_pids(self) -> dict[str, int]:
        """Live etcd members by name (etcd-1 ...)."""
        found = {}
        for pid in process_tree(self.launcher.process.pid):
            for arg in cmdline(pid):
                if arg.startswith("--name=etcd-") and alive(pid):
                    found[arg.removeprefix("--name=")] = pid
        return found

    # -- killing and awaiting the launcher's answer -----------------------------

    async def _kill(self, pid: int) -> int:
        """kill -9 `pid`, gone once this returns; the index of the launcher's
        next standard-error line (where its restart line will be)."""
        after = len(self.launcher.errors)
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: not alive(pid), 10)
        return after

    async def _await_restart(self, name: str, after: int, within_s: float) -> None:
        await self.launcher.wait_for_error_line(
            rf"^baton: {name} restarted \(pid \d+\)$", after, within_s
        )

    async def kill_edge(self, index: int) -> int:
        """kill -9 edge `index` (edge-1 is index 0); pass the answer to
        `await_edge_restart`."""
        return await self._kill(self.edge_pid(index))

    async def await_edge_restart(self, index: int, killed_at: int, within_s: float = 30) -> None:
        """Until the launcher has restarted edge `index` and it serves the console."""
        await self._await_restart(f"edge-{index + 1}", killed_at, within_s)
        assert await asyncio.to_thread(http_ok, self.edges[index] + "/")

    async def restart_session_replica(self, index: int, within_s: float = 30) -> None:
        """kill -9 session replica `index` (session-1 is index 0); return once
        the launcher has started it again and it answers its health check."""
        killed_at = await self._kill(self.session_pid(index))
        await self._await_restart(f"session-{index + 1}", killed_at, within_s)

    def kill_worker(self, host_id: str) -> Worker:
        """kill -9 the host's whole process group (its PID namespace goes with it)."""
        worker = self.workers()[host_id]
        os.killpg(worker.pgid, signal.SIGKILL)
        return worker

    def term_worker(self, host_id: str) -> Worker:
        """SIGTERM to the host's process group: it drains."""
        worker = self.workers()[host_id]
        os.killpg(worker.pgid, signal.SIGTERM)
        return worker

    async def restart_down_workers(self, within_s: float = 60) -> None:
        """SIGUSR1: the launcher starts the hosts that are down; wait for its
        `ready` and for every host's fresh record in etcd."""
        readies = self.launcher.lines.count(READY)
        self.launcher.process.send_signal(signal.SIGUSR1)
        await asyncio.to_thread(self.launcher.wait_for, READY, within_s, readies + 1)
        await self.wait_idle(within_s=20)

    async def restore(self, within_s: float = 90) -> None:
        """Both hosts up and idle again: a host that is draining or gone from
        the registry is awaited until it has stopped, then started again."""
        records = await self.records()
        stopping = [
            w
            for w in self.workers().values()
            if w.host_id not in records or records[w.host_id].draining or not alive(w.pgid)
        ]
        pgids = [w.pgid for w in stopping]
        await eventually(lambda: not any(map(alive, pgids)), within_s)
        if stopping:
            await self.restart_down_workers()
        await self.wait_idle()

    async def records(self) -> dict[str, WorkerRecord]:
        client = await connect_first(self.etcd_endpoints)
        try:
            found = await client.get_prefix(PREFIX.encode())
        finally:
            await client.close()
        records = [WorkerRecord.from_json(kv.value) for kv in found]
        return {record.host_id: record for record in records}

    async def wait_idle(self, within_s: float = 30) -> dict[str, WorkerRecord]:
        """Until both hosts are registered, not draining, holding no slot."""
        deadline = time.monotonic() + within_s
        while True:
            records = await self.records()
            if sorted(records) == ["w1", "w2"] and all(
                r.held == 0 and not r.draining for r in records.values()
            ):
                return records
            if time.monotonic() > deadline:
                raise AssertionError(f"the cluster is not idle: {records}")
            await asyncio.sleep(0.2)
