"""`make cluster`'s launcher, for real: namespaces, etcd, worker hosts, replicas.

Needs root (the launcher makes network namespaces and a bridge); the test
machine runs the suite as root. The launcher helper is tests/cluster/launcher.py's,
shared with the cluster's failure tests (tests/cluster/). Uses displays 1300-1309 and VNC ports
19500-19509 only, and talks to 10.200.0.1 (the bridge) and loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy import netns
from deploy.service_user import DEFAULT_USER
from services.runtime.etcd_client import connect_first
from services.runtime.worker_registry import PREFIX, WorkerRecord
from tests.cluster.launcher import (
    EDGE,
    GATEWAY,
    WORKER,
    Launcher,
    launcher_env,
    remove_leftovers,
)
from tests.conftest import free_port, require_binary
from tests.deploy.stack_process import alive, cmdline, process_tree, real_uid

TOKEN = "cluster-launcher-test-token"


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def ours_in(listing: str) -> list[str]:
    return netns.baton_namespaces(listing)


def all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def namespace_of(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


class GatewayPage(http.server.BaseHTTPRequestHandler):
    """A page on the bridge's address (the gateway), as a test would serve one."""

    def do_GET(self) -> None:
        body = b"baton-gateway-marker"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def gateway_page() -> Iterator[int]:
    """Serve GatewayPage on the gateway (which exists while the cluster runs); its port."""
    server = http.server.HTTPServer((GATEWAY, 0), GatewayPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


async def registered(endpoint: str) -> list[WorkerRecord]:
    """The worker records in etcd, read once the hosts had time to register."""
    client = await connect_first([endpoint])
    try:
        deadline = time.monotonic() + 20
        while True:
            records = [
                WorkerRecord.from_json(kv.value) for kv in await client.get_prefix(PREFIX.encode())
            ]
            if len(records) >= 2 or time.monotonic() > deadline:
                return records
            await asyncio.sleep(0.2)
    finally:
        await client.close()


def make_stale_leftovers() -> int:
    """What a kill -9'd launcher leaves: a namespace with a process in it, a bridge."""
    ip("netns", "add", "baton-cluster-w1")
    ip("link", "add", "name", "baton-br0", "type", "bridge")
    sleeper = subprocess.Popen(["ip", "netns", "exec", "baton-cluster-w1", "sleep", "300"])
    deadline = time.monotonic() + 5
    while namespace_of(sleeper.pid, "net") == namespace_of(os.getpid(), "net"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    threading.Thread(target=sleeper.wait, daemon=True).start()
    return sleeper.pid


@pytest.mark.timeout(150)
def test_cluster_starts_in_namespaces_and_sigterm_leaves_nothing(tmp_path: Path) -> None:
    require_binary("ip", "iproute2")
    require_binary("etcd", "etcd-server")
    assert ours_in(ip("netns", "list")) == [], "another cluster is running on this machine"
    stale_pid = make_stale_leftovers()
    edge_ports = [free_port(), free_port()]
    launcher = Launcher(launcher_env(tmp_path / "run", edge_ports, TOKEN))
    try:
        launcher.wait_for("baton-cluster: ready", timeout=90)
        # The stale namespace, its process and the bridge were found and removed.
        assert any(
            "removed leftovers" in line and "baton-cluster-w1" in line for line in launcher.lines
        )
        assert not alive(stale_pid)

        # Every line has its shape; the address book is complete.
        ours = list(launcher.lines)
        assert all(line.startswith("baton-cluster: ") for line in ours)
        workers = [WORKER.fullmatch(line) for line in ours if " worker " in line]
        edges = [EDGE.fullmatch(line) for line in ours if " edge " in line]
        assert all(workers) and all(edges), ours
        assert [(m[1], m[2]) for m in workers if m] == [
            ("w1", "10.200.0.11"),
            ("w2", "10.200.0.12"),
        ]
        assert sorted(int(m[2]) for m in edges if m) == sorted(edge_ports)
        assert {m[3] for m in edges if m} == {TOKEN}
        assert f"baton-cluster: gateway {GATEWAY}" in ours
        assert ours[-1] == "baton-cluster: ready"
        assert len(ours) == 1 + 2 + 2 + 1 + 1  # leftovers, workers, edges, gateway, ready

        # Each worker host's services run in its own network namespace and
        # mount namespace, with a /tmp of their own.
        our_net = namespace_of(os.getpid(), "net")
        our_mnt = namespace_of(os.getpid(), "mnt")
        host_nets, host_mnts = set(), set()
        worker_pids: set[int] = set()
        for match in workers:
            assert match is not None
            pgid = int(match[3])
            net = namespace_of(pgid, "net")
            assert net is not None and net != our_net
            in_host = [pid for pid in all_pids() if namespace_of(pid, "net") == net]
            worker_pids.update(in_host)
            display = [pid for pid in in_host if cmdline(pid)[1:3] == ["-m", "services.display"]]
            automation = [
                pid for pid in in_host if cmdline(pid)[1:3] == ["-m", "services.automation"]
            ]
            assert len(display) == 1 and len(automation) == 1, [cmdline(p) for p in in_host]
            mnt = namespace_of(display[0], "mnt")
            assert mnt is not None and mnt != our_mnt
            assert namespace_of(automation[0], "mnt") == mnt
            host_nets.add(net)
            host_mnts.add(mnt)
            # A file in the host's /tmp is seen by its services only.
            marker = f"baton-private-tmp-{match[1]}"
            Path(f"/proc/{display[0]}/root/tmp/{marker}").write_text("x")
            assert not Path(f"/tmp/{marker}").exists()
            assert Path(f"/proc/{automation[0]}/root/tmp/{marker}").exists()
        assert len(host_nets) == 2 and len(host_mnts) == 2
        for match in workers:
            assert match is not None
            other = "w2" if match[1] == "w1" else "w1"
            assert not Path(f"/proc/{match[3]}/root/tmp/baton-private-tmp-{other}").exists()

        # The gateway answers from inside a worker host's namespace.
        with gateway_page() as port:
            url = f"http://{GATEWAY}:{port}/"
            fetch = f"import urllib.request; print(urllib.request.urlopen({url!r}).read().decode())"
            inside = subprocess.run(
                ["ip", "netns", "exec", "baton-cluster-w2", sys.executable, "-c", fetch],
                capture_output=True,
                text=True,
                timeout=20,
            )
        assert inside.stdout.strip() == "baton-gateway-marker", inside.stderr

        # Both edges serve the console, and reach a session service (with the
        # shared internal credential), which reaches etcd: listing answers.
        for match in edges:
            assert match is not None
            with urllib.request.urlopen(match[1] + "/", timeout=10) as reply:
                assert reply.status == 200
                assert b"<html" in reply.read().lower()
            listing = urllib.request.Request(
                match[1] + "/api/browser-session", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            with urllib.request.urlopen(listing, timeout=20) as reply:
                assert reply.status == 200
                assert json.load(reply)["sessions"] == []

        # Each host registered itself in the 3-member etcd with its own address.
        etcd = [
            pid for pid in process_tree(launcher.process.pid) if "--name=etcd-1" in cmdline(pid)
        ]
        assert len(etcd) == 1
        client_url = next(a for a in cmdline(etcd[0]) if a.startswith("--listen-client-urls="))
        records = asyncio.run(registered(client_url.split("=", 1)[1].removeprefix("http://")))
        assert {r.host_id: (r.display_address, r.automation_address) for r in records} == {
            "w1": ("10.200.0.11:50052", "10.200.0.11:50053"),
            "w2": ("10.200.0.12:50052", "10.200.0.12:50053"),
        }
        assert all(r.stream_address.startswith(f"10.200.0.1{r.host_id[1]}:") for r in records)

        everything = process_tree(launcher.process.pid) | worker_pids
        # Only the launchers are root: etcd and every service run as user baton
        # (deploy/service_user.py), the X and VNC servers and websockify as their
        # services do, the browsers (none yet) as their own uids.
        uids = {pid: real_uid(pid) for pid in everything if alive(pid)}
        as_root = [cmdline(pid) for pid, uid in uids.items() if uid == 0]
        assert all("deploy.cluster" in argv or "deploy.worker_host" in argv for argv in as_root), (
            as_root
        )
        baton = pwd.getpwnam(DEFAULT_USER).pw_uid
        serving = [
            pid for pid in uids if cmdline(pid)[1:2] == ["-m"] and "services." in cmdline(pid)[2]
        ]
        assert len(serving) == 2 * 2 + 2 + 2, [cmdline(pid) for pid in serving]
        assert {uids[pid] for pid in serving} == {baton}
        assert {uids[pid] for pid in uids if "--name=etcd-1" in cmdline(pid)} == {baton}

        # kill -9 of a worker's process group takes the whole host with it (its
        # PID namespace), X servers and all; the launcher says so, goes on.
        first = workers[0]
        assert first is not None
        first_net = namespace_of(int(first[3]), "net")
        os.killpg(int(first[3]), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while [p for p in all_pids() if namespace_of(p, "net") == first_net]:
            assert time.monotonic() < deadline, "the killed host's processes live on"
            time.sleep(0.05)
        launcher.wait_for("baton-cluster: worker w1 was killed by SIGKILL; not restarted", 10)
        assert len(everything) >= 3 + 2 * 3 + 2 + 2  # etcd, hosts, sessions, edges
        launcher.process.send_signal(signal.SIGTERM)
        # A second one (an impatient Ctrl-C) must not cut the clean-up short.
        launcher.wait_for("baton-cluster: stopping", timeout=10)
        launcher.process.send_signal(signal.SIGTERM)
        assert launcher.process.wait(timeout=45) == 0, "\n".join(launcher.errors[-40:])
        launcher.close()
        assert launcher.lines[-1] == "baton-cluster: stopped"

        # Nothing is left: processes, namespaces, links, files.
        assert [pid for pid in everything if alive(pid)] == []
        assert [p for p in all_pids() if namespace_of(p, "net") in host_nets] == []
        assert ours_in(ip("netns", "list")) == []
        assert netns.baton_links(ip("-br", "link")) == []
        assert not (tmp_path / "run").exists()
        assert not (tmp_path / "run.lock").exists()
    finally:
        launcher.close()
        # Whatever a failed run left must not break the next test.
        remove_leftovers()


def test_without_root_it_says_so_in_one_line_and_makes_nothing(tmp_path: Path) -> None:
    # Root, minus the two capabilities namespaces need: as an unprivileged user.
    drop = ["setpriv", "--bounding-set", "-net_admin,-sys_admin", "--inh-caps", "-all"]
    env = {**os.environ, "BATON_CLUSTER_RUN_DIR": str(tmp_path / "run")}
    result = subprocess.run(
        [*drop, sys.executable, "-m", "deploy.cluster"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "needs root" in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.timeout(120)
def test_a_service_failing_mid_start_stops_everything_already_made(tmp_path: Path) -> None:
    assert ours_in(ip("netns", "list")) == [], "another cluster is running on this machine"
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    # The second edge cannot bind: by then etcd, the hosts and the sessions run.
    launcher = Launcher(
        launcher_env(tmp_path / "run", [free_port(), taken.getsockname()[1]], TOKEN)
    )
    try:
        seen: set[int] = set()
        saw_hosts = False
        deadline = time.monotonic() + 90
        while launcher.process.poll() is None and time.monotonic() < deadline:
            seen |= process_tree(launcher.process.pid)
            saw_hosts = saw_hosts or bool(ours_in(ip("netns", "list")))
            time.sleep(0.05)
        assert launcher.process.wait(timeout=5) == 2
        launcher.close()
        assert saw_hosts, "the failure came before the namespaces: nothing was tested"
        assert any(line.startswith("error: edge-2") for line in launcher.errors), launcher.errors
        assert "baton-cluster: ready" not in launcher.lines
        assert [pid for pid in seen if alive(pid)] == []
        assert ours_in(ip("netns", "list")) == []
        assert netns.baton_links(ip("-br", "link")) == []
        assert not (tmp_path / "run").exists()
    finally:
        taken.close()
        launcher.close()
        remove_leftovers()
