"""Figure 8: the cluster for real, `make cluster`'s launcher on this machine.

3 etcd members, 2 worker hosts in their own network namespaces, 2 session
replicas, 2 edges (deploy/README.md). Two figures:

- sessions created per second across the cluster: `sessions` creates at once,
  spread over both edges, each answered once its browser runs on one of the
  two hosts (placement by free capacity), and each create's latency;
- failover time: a Socket.IO client watching a session through an edge; the
  session's worker host is killed whole (kill -9 of its process group); the
  time until the client is told the session FAILED ("worker host lost"), over
  `kills` kills; the host is started again (SIGUSR1) between kills. The bound
  is the worker lease TTL (BATON_WORKER_LEASE_TTL_S, 10 s here) + 2 s.

Needs root (network namespaces). Displays 1700-1729, VNC ports 19700-19729.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from baton.client import ApiError, BatonClient
from baton.client.services import open_service_channel, operator, session_service
from baton.session.v1 import session_pb2
from bench.stats import summary_ms
from services.edge.auth import generate_api_token
from services.runtime.internal_auth import InternalToken
from tests.cluster.launcher import READY, Launcher, RunningCluster, launcher_env, remove_leftovers
from tests.conftest import free_port, searchable
from tests.edge.full_stack import form_site

LEASE_TTL_S = 10
INTERNAL_TOKEN = InternalToken.generate()


@contextlib.asynccontextmanager
async def running_cluster(slots_per_host: int) -> AsyncIterator[RunningCluster]:
    work = Path(tempfile.mkdtemp(prefix="baton-bench-cluster-"))
    # The cluster's services run as user baton (deploy/service_user.py).
    searchable(work)
    env = {
        **launcher_env(work / "run", [free_port(), free_port()], generate_api_token()),
        "BATON_DISPLAY_NUMBERS": "1700-1729",
        "BATON_VNC_PORTS": "19700-19729",
        "BATON_MAX_SLOTS": str(slots_per_host),
        "BATON_WARM_SLOTS": "1",
        "BATON_WORKER_LEASE_TTL_S": str(LEASE_TTL_S),
        "BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value,
    }
    launcher = Launcher(env)
    try:
        await asyncio.to_thread(launcher.wait_for, READY, 120)
        yield RunningCluster(launcher)
    finally:
        launcher.process.terminate()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(launcher.process.wait, 60)
        launcher.close()
        await asyncio.to_thread(remove_leftovers)
        shutil.rmtree(work, ignore_errors=True)


class Client:
    def __init__(self, cluster: RunningCluster, http: aiohttp.ClientSession, page: str) -> None:
        self.cluster = cluster
        self.http = http
        self.page = page

    def edge(self, edge: int) -> BatonClient:
        """baton.client on one of the cluster's edges, as the operator."""
        return BatonClient(self.cluster.edges[edge], self.cluster.api_token, http=self.http)

    async def create(self, edge: int) -> tuple[str, float]:
        began = time.perf_counter()
        session = await self.edge(edge).create_session(
            "wait for a person",
            self.page,
            max_steps=2,
            steps=[{"action": "request_user", "reason": "bench"}],
        )
        return session["id"], time.perf_counter() - began

    async def end(self, session_id: str) -> None:
        try:
            await self.edge(1).end_session(session_id)
        except ApiError as error:
            # Already gone (its host was killed) or ended: nothing to end.
            assert error.status in (404, 409), error

    async def host_of(self, session_id: str) -> str:
        async with open_service_channel(
            self.cluster.session_address(0), INTERNAL_TOKEN.value
        ) as channel:
            answer = await session_service(channel).GetSession(
                session_pb2.GetSessionRequest(session_id=session_id, actor=operator())
            )
        return answer.session.placement.host_id


async def creates(client: Client, sessions: int) -> dict[str, Any]:
    await client.cluster.wait_idle(within_s=60)
    began = time.perf_counter()
    made = await asyncio.gather(*(client.create(i % 2) for i in range(sessions)))
    wall = time.perf_counter() - began
    hosts = [await client.host_of(session_id) for session_id, _ in made]
    for session_id, _ in made:
        await client.end(session_id)
    result = summary_ms([latency for _, latency in made])
    result["sessions"] = sessions
    result["per_second"] = round(sessions / wall, 2)
    result["per_host"] = {host: hosts.count(host) for host in sorted(set(hosts))}
    return result


async def one_failover(client: Client) -> float:
    """Seconds from the kill of a session's host to its watcher being told."""
    await client.cluster.wait_idle(within_s=60)
    session_id, _ = await client.create(0)
    host = await client.host_of(session_id)
    async with client.edge(1).events() as watcher:
        await watcher.watch(session_id)
        killed = time.monotonic()
        client.cluster.kill_worker(host)
        await watcher.wait_for(
            lambda e: e.session is not None and e.session["id"] == session_id,
            timeout_s=LEASE_TTL_S + 30,
            names=["session:error"],
        )
        seconds = time.monotonic() - killed
    await client.end(session_id)
    await client.cluster.restore(within_s=120)
    return seconds


async def cluster_figures(sessions: int, kills: int) -> dict[str, Any]:
    async with (
        running_cluster(slots_per_host=sessions // 2 + 1) as cluster,
        form_site(cluster.gateway) as site,
        aiohttp.ClientSession() as http,
    ):
        client = Client(cluster, http, site.form_url)
        created = await creates(client, sessions)
        failovers = [await one_failover(client) for _ in range(kills)]
    failover = summary_ms(failovers)
    failover["bound_ms"] = (LEASE_TTL_S + 2) * 1000
    return {"creates": created, "failover": failover}
