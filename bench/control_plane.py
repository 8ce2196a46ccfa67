"""Figure 6: ChangeControl throughput and latency: memory store, etcd, and two
session service replicas sharing one etcd.

The session service runs in a process of its own (`python -m bench.control_plane
serve [etcd endpoint]`) with in-memory twins of display and automation, so the
figure is the control plane alone: gRPC, the state machine and the store. Each
client works on its own session, alternating take_control and return_control;
with two replicas, each client sends its calls to both in turn (as clients
behind a load balancer would), so every other change is made by the replica that
did not make the one before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from baton.session.v1 import session_pb2, session_pb2_grpc
from bench.stats import summary_ms
from services.display.websockify_router import pick_free_port, wait_for_tcp
from services.runtime.grpc_client import open_channel
from services.runtime.grpc_server import serve_until_signal
from services.runtime.internal_auth import ENV_NAME, InternalToken
from services.runtime.processes import require_binary, start_process, stop_process_group
from services.runtime.settings import Env

ACTIONS = (
    session_pb2.CONTROL_ACTION_TAKE_CONTROL,
    session_pb2.CONTROL_ACTION_RETURN_CONTROL,
)

# The session service process gets it in its environment.
INTERNAL_TOKEN = InternalToken.generate()


def etcd_argv(etcd: str, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    return [
        etcd,
        "--name=baton-bench",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=baton-bench={peer_url}",
    ]


@contextlib.asynccontextmanager
async def running_etcd() -> AsyncIterator[str]:
    """Debian's etcd on free loopback ports and a fresh data dir; its client endpoint."""
    etcd = require_binary("etcd", "etcd-server")
    data_dir = Path(tempfile.mkdtemp(prefix="baton-bench-etcd-"))
    client_port, peer_port = pick_free_port(), pick_free_port()
    process = await start_process(etcd_argv(etcd, data_dir, client_port, peer_port))
    try:
        await wait_for_tcp(client_port, time.monotonic() + 20, process)
        yield f"127.0.0.1:{client_port}"
    finally:
        await stop_process_group(process, 5.0)
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def session_service(etcd: str | None) -> AsyncIterator[int]:
    """The session service with twin workers in its own process; its port."""
    argv = [sys.executable, "-m", "bench.control_plane", "serve"] + ([etcd] if etcd else [])
    env = {**os.environ, ENV_NAME: INTERNAL_TOKEN.value}
    process = await start_process(argv, env=env, stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        yield int(line)
    finally:
        await stop_process_group(process, 5.0)


async def measure(ports: list[int], clients: int, cycles: int) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        stubs = [
            session_pb2_grpc.SessionServiceStub(
                await stack.enter_async_context(open_channel(f"127.0.0.1:{p}", INTERNAL_TOKEN))
            )
            for p in ports
        ]
        sessions = []
        for index in range(clients):
            actor = session_pb2.Actor(user_id=f"user-{index}")
            created = await stubs[index % len(stubs)].CreateSession(
                session_pb2.CreateSessionRequest(actor=actor, task="bench", url="http://127.0.0.1/")
            )
            sessions.append((actor, created.session.id))
        latencies: list[float] = []

        async def client(actor: session_pb2.Actor, session_id: str) -> None:
            for cycle in range(cycles * 2):
                began = time.perf_counter()
                await stubs[cycle % len(stubs)].ChangeControl(
                    session_pb2.ChangeControlRequest(
                        session_id=session_id, actor=actor, action=ACTIONS[cycle % 2]
                    )
                )
                latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        await asyncio.gather(*(client(actor, session_id) for actor, session_id in sessions))
        wall = time.perf_counter() - began
    result = summary_ms(latencies)
    result["clients"] = clients
    result["replicas"] = len(ports)
    result["per_second"] = round(len(latencies) / wall, 1)
    return result


async def control_plane(clients: int, cycles: int) -> dict[str, Any]:
    async with session_service(None) as port:
        memory = await measure([port], clients, cycles)
    async with running_etcd() as endpoint, session_service(endpoint) as port:
        etcd = await measure([port], clients, cycles)
    # A fresh etcd: the replicas find no sessions of the run before to adopt.
    async with (
        running_etcd() as endpoint,
        session_service(endpoint) as first,
        session_service(endpoint) as second,
    ):
        replicas = await measure([first, second], clients, cycles)
    return {"memory": memory, "etcd": etcd, "etcd_2_replicas": replicas}


async def serve(etcd: str | None) -> None:
    # Imported here: only the server process needs the session service and twins.
    from services.session.server import start_session_server
    from services.session.settings import SessionSettings
    from tests.session.twins import twin_worker

    worker, _, _ = twin_worker()
    settings = SessionSettings(
        internal_token=InternalToken.from_env(Env(os.environ)),
        etcd_endpoints=(etcd,) if etcd else (),
    )
    running = await start_session_server(settings, worker=worker)
    print(running.port, flush=True)
    await serve_until_signal(running, grace=1.0)


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    asyncio.run(serve(sys.argv[2] if len(sys.argv) > 2 else None))
