"""`make cluster`: a whole Baton cluster on one machine (deploy/README.md).

Starts etcd (3 members), 2 worker hosts (display + automation, each in its own
network, mount and PID namespaces: deploy/netns.py, deploy/worker_host.py),
2 session services and 2 edges in the root namespace, all sharing one
BATON_INTERNAL_TOKEN and one operator token. Its standard output is the
cluster's address book, one `baton-cluster: ...` line each (the services' own
output goes to standard error):

    baton-cluster: worker <host id> <address> pgid <process group id>
    baton-cluster: edge <console URL>
    baton-cluster: gateway <address>
    baton-cluster: ready

`kill -9 -<pgid>` kills a worker host whole (its PID namespace goes with its
first process); the launcher then says so and does not restart it: a host is
the unit that fails; SIGUSR1 to the launcher starts the hosts that are down
again. Session services and edges that crash are restarted like `make run`'s.
Ctrl-C or SIGTERM stops everything and removes the namespaces, the bridge and
the run directory; a second Ctrl-C does not cut that short. What a killed
launcher left is removed at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from baton.automation.v1 import automation_pb2
from baton.display.v1 import display_pb2
from baton.session.v1 import session_pb2
from deploy import netns
from deploy.local_stack import (
    STOP_GRACE_S,
    Probe,
    Service,
    readiness,
    starter,
    wait_ready,
    with_internal_token,
)
from deploy.service_user import prepare, service_user
from deploy.supervisor import SupervisedService, describe_exit, supervise_all
from deploy.worker_host import AUTOMATION_PORT, DISPLAY_PORT
from services.display.settings import NumberRange
from services.edge.auth import console_url, generate_api_token
from services.runtime.entrypoint import run_service, stop_signals
from services.runtime.errors import BatonError, FailedPrecondition, Unavailable
from services.runtime.processes import require_binary, start_process, stop_process_group
from services.runtime.settings import Env

PREFIX = "baton-cluster:"
WORKER_IDS = ("w1", "w2")
SESSION_REPLICAS = 2
ETCD_MEMBERS = 3
ETCD_READY_TIMEOUT_S = 30.0
# A member's data is removed with the run dir anyway; a leader whose peers stop
# with it would wait for a leadership transfer that cannot happen.
ETCD_STOP_GRACE_S = 2.0

DISPLAY_HEALTH = display_pb2.DESCRIPTOR.services_by_name["DisplayService"].full_name
AUTOMATION_HEALTH = automation_pb2.DESCRIPTOR.services_by_name["AutomationService"].full_name
SESSION_HEALTH = session_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name

# Children in the root namespace get SIGTERM when the launcher dies, however it
# dies (PR_SET_PDEATHSIG): a kill -9 of the launcher leaves no service behind.
ROOT_WRAPPER = ("setpriv", "--pdeathsig", "TERM")

# Variables every process of the cluster gets from the launcher, never from the
# caller's environment: they differ per process.
PER_PROCESS = (
    "BATON_DISPLAY_ADDRESS",
    "BATON_AUTOMATION_ADDRESS",
    "BATON_HOST_ID",
    "BATON_PUBLIC_URL",
    "BATON_SESSION_ADDRESS",
)


@dataclass(frozen=True)
class ClusterSettings:
    edge_ports: tuple[int, ...] = (8080, 8081)
    edge_host: str = "127.0.0.1"
    # Split evenly between the worker hosts: disjoint on every host.
    display_numbers: NumberRange = field(default_factory=lambda: NumberRange(100, 199))
    vnc_ports: NumberRange = field(default_factory=lambda: NumberRange(15900, 15999))
    # Etcd data, session state dirs and logs; removed on stop. Fixed, so that a
    # killed launcher's is found at the next start.
    run_dir: Path = Path("/run/baton-cluster")
    api_token: str = field(default_factory=generate_api_token, repr=False)
    https: bool = False

    @classmethod
    def from_env(cls, env: Env) -> ClusterSettings:
        ports = env.items("BATON_CLUSTER_EDGE_PORTS") or ["8080", "8081"]
        try:
            edge_ports = tuple(int(port) for port in ports)
        except ValueError:
            raise FailedPrecondition(
                f"BATON_CLUSTER_EDGE_PORTS={','.join(ports)!r} is not a list of ports"
            ) from None
        return cls(
            edge_ports=edge_ports,
            edge_host=env.text("BATON_EDGE_HOST", cls.edge_host),
            display_numbers=NumberRange.parse(
                "BATON_DISPLAY_NUMBERS", env.text("BATON_DISPLAY_NUMBERS", "100-199")
            ),
            vnc_ports=NumberRange.parse(
                "BATON_VNC_PORTS", env.text("BATON_VNC_PORTS", "15900-15999")
            ),
            run_dir=Path(env.text("BATON_CLUSTER_RUN_DIR", str(cls.run_dir))),
            api_token=env.optional("BATON_API_TOKEN") or generate_api_token(),
            https=env.optional("BATON_TLS_CERT") is not None,
        )


@dataclass(frozen=True)
class EtcdMember:
    name: str
    client_port: int
    peer_port: int


def split_range(numbers: NumberRange, parts: int) -> list[NumberRange]:
    """`numbers` cut into `parts` disjoint ranges of equal length."""
    size = len(numbers) // parts
    if size < 1:
        raise FailedPrecondition(
            f"the range {numbers.first}-{numbers.last} is too small for {parts} worker hosts"
        )
    return [
        NumberRange(numbers.first + i * size, numbers.first + (i + 1) * size - 1)
        for i in range(parts)
    ]


def etcd_argv(
    binary: str, member: EtcdMember, members: Sequence[EtcdMember], host: str, data_dir: Path
) -> list[str]:
    def peer(m: EtcdMember) -> str:
        return f"http://{host}:{m.peer_port}"

    client = f"http://{host}:{member.client_port}"
    return [
        binary,
        f"--name={member.name}",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer(member)}",
        f"--initial-advertise-peer-urls={peer(member)}",
        "--initial-cluster=" + ",".join(f"{m.name}={peer(m)}" for m in members),
        "--initial-cluster-state=new",
        "--initial-cluster-token=baton-cluster",
        "--log-level=warn",
    ]


def etcd_endpoints(members: Sequence[EtcdMember], host: str) -> str:
    return ",".join(f"{host}:{m.client_port}" for m in members)


def without_per_process(base: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in base.items() if name not in PER_PROCESS}


def worker_env(
    base: Mapping[str, str],
    host: netns.HostNetwork,
    endpoints: str,
    displays: NumberRange,
    vnc_ports: NumberRange,
) -> dict[str, str]:
    """A worker host's environment: its services on its own address (README, Cluster)."""
    display = f"{host.address}:{DISPLAY_PORT}"
    automation = f"{host.address}:{AUTOMATION_PORT}"
    return {
        **without_per_process(base),
        "BATON_ETCD_ENDPOINTS": endpoints,
        "BATON_HOST_ID": host.host_id,
        "BATON_DISPLAY_HOST": host.address,
        "BATON_DISPLAY_PORT": str(DISPLAY_PORT),
        "BATON_DISPLAY_ADVERTISE_ADDRESS": display,
        "BATON_AUTOMATION_HOST": host.address,
        "BATON_AUTOMATION_PORT": str(AUTOMATION_PORT),
        "BATON_AUTOMATION_ADVERTISE_ADDRESS": automation,
        # The automation service follows its own host's display for pre-warming.
        "BATON_DISPLAY_ADDRESS": display,
        "BATON_WEBSOCKIFY_HOST": host.address,
        "BATON_STREAM_ADVERTISE_HOST": host.address,
        "BATON_DISPLAY_NUMBERS": f"{displays.first}-{displays.last}",
        "BATON_VNC_PORTS": f"{vnc_ports.first}-{vnc_ports.last}",
        # Everything a host keeps in files stays in its private /tmp.
        "TMPDIR": "/tmp",
        "BATON_DISPLAY_STATE_DIR": "/tmp/baton-display-state",
        "BATON_PROFILE_ROOT": "/tmp/baton-profiles",
    }


def session_env(
    base: Mapping[str, str], port: int, endpoints: str, state_dir: Path
) -> dict[str, str]:
    """A session replica's: etcd, no single worker address (hosts come from the registry)."""
    return {
        **without_per_process(base),
        "BATON_ETCD_ENDPOINTS": endpoints,
        "BATON_SESSION_HOST": "127.0.0.1",
        "BATON_SESSION_PORT": str(port),
        "BATON_SESSION_STATE_DIR": str(state_dir),
    }


def session_target(ports: Sequence[int], first: int) -> str:
    """A gRPC target naming every session replica, `ports[first]`'s first: the
    edge uses that one and fails over to the next when it goes (pick_first)."""
    ordered = [*ports[first:], *ports[:first]]
    return "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ordered)


def edge_env(base: Mapping[str, str], host: str, port: int, session: str) -> dict[str, str]:
    return {
        **without_per_process(base),
        "BATON_EDGE_HOST": host,
        "BATON_EDGE_PORT": str(port),
        "BATON_SESSION_ADDRESS": session,
    }


def edge_base_url(settings: ClusterSettings, port: int) -> str:
    scheme = "https" if settings.https else "http"
    return f"{scheme}://{settings.edge_host}:{port}"


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _etcd_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(json.load(response).get("health") == "true")
    except (urllib.error.URLError, OSError, ValueError):
        return False


@contextlib.contextmanager
def single_launcher(lock_path: Path) -> Iterator[None]:
    """One cluster per machine: the names (baton-br0, ...) are fixed. The lock
    goes with the process, so a killed launcher's leftovers are stale for sure."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FailedPrecondition(
                f"another make cluster is running (it holds {lock_path})"
            ) from None
        try:
            yield
        finally:
            lock_path.unlink(missing_ok=True)


@dataclass
class WorkerProcess:
    host: netns.HostNetwork
    process: asyncio.subprocess.Process


class Cluster:
    def __init__(
        self,
        settings: ClusterSettings,
        env: Mapping[str, str],
        say: Callable[[str], None],
        output: IO[str],
    ) -> None:
        self.settings = settings
        self.env = env
        self.say = say
        self.output = output
        self.plan = netns.plan_network(WORKER_IDS)
        self.network = netns.Network(self.plan)
        # Bad TLS files (BATON_GRPC_TLS_*) stop the launch here, with the setting's name.
        self.probe = Probe.from_env(env)
        # etcd, session and edge run as user baton, as the worker hosts' services
        # do (deploy/service_user.py); the wrapper keeps PR_SET_PDEATHSIG.
        self.user = service_user(env)
        self.wrapper = (*ROOT_WRAPPER, *(self.user.setpriv_options() if self.user else ()))
        self.etcd: list[asyncio.subprocess.Process] = []
        self.workers: list[WorkerProcess] = []
        self.worker_envs: dict[str, Mapping[str, str]] = {}
        self.sessions: list[SupervisedService] = []
        self.edges: list[SupervisedService] = []

    async def remove_leftovers(self) -> None:
        namespaces, links = await netns.leftovers()
        run_dir = self.settings.run_dir
        if namespaces or links or run_dir.exists():
            await netns.remove(namespaces, links)
            shutil.rmtree(run_dir, ignore_errors=True)
            found = [*namespaces, *links, *([str(run_dir)] if run_dir.exists() else [])]
            self.say(
                f"{PREFIX} removed leftovers of an earlier run: {' '.join(found or [str(run_dir)])}"
            )

    async def start(self) -> None:
        self.settings.run_dir.mkdir(parents=True)
        await self.network.create()
        endpoints = await self._start_etcd()
        displays = split_range(self.settings.display_numbers, len(self.plan.hosts))
        vnc_ports = split_range(self.settings.vnc_ports, len(self.plan.hosts))
        waits: list[Awaitable[None]] = []
        for host, numbers, ports in zip(self.plan.hosts, displays, vnc_ports, strict=True):
            env = worker_env(self.env, host, endpoints, numbers, ports)
            self.worker_envs[host.host_id] = env
            waits.append(self._start_worker(host, env))
        session_ports = [free_port("127.0.0.1") for _ in range(SESSION_REPLICAS)]
        for index, port in enumerate(session_ports):
            name = f"session-{index + 1}"
            env = session_env(self.env, port, endpoints, self.settings.run_dir / name)
            service = Service(name, "services.session", port, health_service=SESSION_HEALTH)
            self.sessions.append(self._supervised(service, env))
        for index, port in enumerate(self.settings.edge_ports):
            url = edge_base_url(self.settings, port) + "/"
            env = edge_env(
                self.env,
                self.settings.edge_host,
                port,
                session_target(session_ports, index % len(session_ports)),
            )
            # The console page: /healthz also asks the session service about
            # its worker hosts, which is the registry's business, not ours.
            service = Service(f"edge-{index + 1}", "services.edge", None, http_url=url)
            self.edges.append(self._supervised(service, env))
        waits += [supervised.start() for supervised in [*self.sessions, *self.edges]]
        await _all_or_nothing(waits)

    def _as_user(self, env: Mapping[str, str]) -> Mapping[str, str]:
        if self.user is None:
            return env
        env = self.user.environment(env)
        prepare(self.user, env)
        return env

    def _supervised(self, service: Service, env: Mapping[str, str]) -> SupervisedService:
        env = self._as_user(env)
        return SupervisedService(
            service.name,
            starter(service, env, stdout=self.output.fileno(), wrapper=self.wrapper),
            readiness(service, self.probe),
            STOP_GRACE_S,
            # Its crash and restart lines go with the services' logs.
            say=lambda line: print(line, file=self.output, flush=True),
        )

    async def _start_etcd(self) -> str:
        binary = require_binary("etcd", "etcd-server")
        host = self.plan.gateway
        members = [
            EtcdMember(f"etcd-{i + 1}", free_port(host), free_port(host))
            for i in range(ETCD_MEMBERS)
        ]
        data_dirs = {member.name: self.settings.run_dir / member.name for member in members}
        for data_dir in data_dirs.values():
            data_dir.mkdir(mode=0o700)
        if self.user is not None:
            for data_dir in data_dirs.values():
                os.chown(data_dir, self.user.uid, self.user.gid)
            prepare(self.user, self.user.environment(self.env), data_dirs)
        for member in members:
            argv = etcd_argv(binary, member, members, host, data_dirs[member.name])
            starting = start_process(
                [*self.wrapper, *argv], env=self.env, stdout=self.output.fileno(), stderr=None
            )
            self.etcd.append(await _start(starting))
        deadline = time.monotonic() + ETCD_READY_TIMEOUT_S
        for member, process in zip(members, self.etcd, strict=True):
            url = f"http://{host}:{member.client_port}/health"
            while not await asyncio.to_thread(_etcd_healthy, url):
                if process.returncode is not None:
                    raise Unavailable(f"{member.name} {describe_exit(process.returncode)}")
                if time.monotonic() > deadline:
                    raise Unavailable(f"etcd was not healthy within {ETCD_READY_TIMEOUT_S:g} s")
                await asyncio.sleep(0.2)
        return etcd_endpoints(members, host)

    async def _start_worker(self, host: netns.HostNetwork, env: Mapping[str, str]) -> None:
        argv = netns.enter_argv(host.namespace, [sys.executable, "-m", "deploy.worker_host"])
        process = await _start(
            start_process(argv, env=env, stdout=self.output.fileno(), stderr=None)
        )
        # A host started again replaces its dead predecessor.
        self.workers = [w for w in self.workers if w.host.host_id != host.host_id]
        self.workers.append(WorkerProcess(host, process))
        for name, port, health in (
            ("display", DISPLAY_PORT, DISPLAY_HEALTH),
            ("automation", AUTOMATION_PORT, AUTOMATION_HEALTH),
        ):
            probe = Service(
                f"{host.host_id} {name}",
                f"services.{name}",
                port,
                grpc_host=host.address,
                health_service=health,
            )
            await wait_ready(probe, process, self.probe)

    def announce(self) -> None:
        for worker in self.workers:
            host = worker.host
            self.say(f"{PREFIX} worker {host.host_id} {host.address} pgid {worker.process.pid}")
        for port in self.settings.edge_ports:
            url = console_url(edge_base_url(self.settings, port), self.settings.api_token)
            self.say(f"{PREFIX} edge {url}")
        self.say(f"{PREFIX} gateway {self.plan.gateway}")
        self.say(f"{PREFIX} ready")

    async def run_until(self, stop: Awaitable[object]) -> None:
        """Restart crashed session services and edges; report dead hosts and
        members; start again the hosts that are down on SIGUSR1."""
        watchers = [asyncio.create_task(self._report_worker_exit(w)) for w in self.workers]
        watchers += [
            asyncio.create_task(self._report_exit(f"etcd-{i + 1}", p, "etcd member"))
            for i, p in enumerate(self.etcd)
        ]
        restart = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, restart.set)
        watchers.append(asyncio.create_task(self._restart_hosts(restart, watchers)))
        try:
            await supervise_all([*self.sessions, *self.edges], stop)
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)

    async def _report_worker_exit(self, worker: WorkerProcess) -> None:
        await self._report_exit(worker.host.host_id, worker.process, "worker")

    async def _report_exit(self, name: str, process: asyncio.subprocess.Process, kind: str) -> None:
        await process.wait()
        self.say(f"{PREFIX} {kind} {name} {describe_exit(process.returncode)}; not restarted")

    async def _restart_hosts(
        self, requested: asyncio.Event, watchers: list[asyncio.Task[None]]
    ) -> None:
        """On each request (SIGUSR1), start anew every worker host that is down,
        in its namespace as before; it registers with a new epoch. One `worker`
        line each (a new pgid), then `ready`."""
        while True:
            await requested.wait()
            requested.clear()
            down = [w for w in self.workers if w.process.returncode is not None]
            for worker in down:
                try:
                    # The start replaces the dead host in self.workers.
                    await self._start_worker(worker.host, self.worker_envs[worker.host.host_id])
                except Unavailable as exc:
                    self.say(f"{PREFIX} worker {worker.host.host_id} did not start: {exc.message}")
                    continue
                started = self.workers[-1]
                watchers.append(asyncio.create_task(self._report_worker_exit(started)))
                host = started.host
                self.say(
                    f"{PREFIX} worker {host.host_id} {host.address} pgid {started.process.pid}"
                )
            if down:
                self.say(f"{PREFIX} ready")

    async def stop(self) -> None:
        """Stop what was started, newest first, then remove the network and files.

        Idempotent and safe after a failure part-way through `start`."""
        await asyncio.gather(*(edge.stop() for edge in self.edges))
        await asyncio.gather(*(session.stop() for session in self.sessions))
        # The whole group: unshare's own process ignores SIGTERM, the host's
        # first process (deploy/worker_host.py) stops its services in order.
        await asyncio.gather(*(stop_process_group(w.process, STOP_GRACE_S) for w in self.workers))
        await asyncio.gather(*(stop_process_group(p, ETCD_STOP_GRACE_S) for p in self.etcd))
        await self.network.destroy()
        shutil.rmtree(self.settings.run_dir, ignore_errors=True)


async def _all_or_nothing(awaitables: Sequence[Awaitable[None]]) -> None:
    """Await all; when one fails (or a stop cancels us), cancel and await the
    rest before raising, so that nothing starts behind the clean-up."""
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _start(
    starting: Awaitable[asyncio.subprocess.Process],
) -> asyncio.subprocess.Process:
    """Start a process even when a stop cancels the caller meanwhile (its
    caller records it, so the stop finds and ends it)."""
    task = asyncio.ensure_future(starting)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def main() -> None:
    netns.require_privileges()
    settings = ClusterSettings.from_env(Env(os.environ))
    env = with_internal_token(os.environ)
    env["BATON_API_TOKEN"] = settings.api_token

    def say(line: str) -> None:
        print(line, flush=True)

    with (
        single_launcher(settings.run_dir.with_name(settings.run_dir.name + ".lock")),
        # Kept until the clean-up is over: a second Ctrl-C must not cut it short.
        stop_signals(lambda: say(f"{PREFIX} still stopping")) as stop_requested,
    ):
        cluster = Cluster(settings, env, say, sys.stderr)
        stop = asyncio.create_task(stop_requested.wait())
        try:
            await cluster.remove_leftovers()
            starting = asyncio.create_task(cluster.start())
            await asyncio.wait({starting, stop}, return_when=asyncio.FIRST_COMPLETED)
            if stop.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError, BatonError):
                    await starting
                return
            starting.result()
            cluster.announce()
            await cluster.run_until(stop)
        finally:
            if stop_requested.is_set():
                say(f"{PREFIX} stopping")
            await cluster.stop()
            stop.cancel()
            say(f"{PREFIX} stopped")


if __name__ == "__main__":
    run_service(main)
