"""Figure 7: the session plane alone at cluster scale, with simulated worker hosts.

One session service (its orchestrator, in this process) on a real etcd, placing
sessions on simulated hosts (tests/session/twins.py DirectoryTwin: in-memory
display and automation, capacity as the registry would show it). At each scale
(hosts, sessions) it creates the sessions from a few concurrent clients, then
lists them as an operator page by page, and reports how create latency,
throughput, listing time and the process's memory grow with the cluster: what
the session plane itself costs, apart from browsers and displays.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from typing import Any

from bench.control_plane import INTERNAL_TOKEN, running_etcd
from bench.stats import summary_ms
from services.runtime.etcd_client import connect_first
from services.session.etcd_store import EtcdStore
from services.session.model import Actor
from services.session.orchestrator import SessionOrchestrator, SessionSpec
from services.session.paging import key_of
from services.session.settings import SessionSettings
from tests.session.twins import DirectoryTwin

OPERATOR = Actor("operator", operator=True)
SPEC = SessionSpec(task="bench", url="http://127.0.0.1/", max_steps=5, steps=(), viewport=None)
CLIENTS = 8
PAGE = 100


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def one_scale(endpoint: str, hosts: int, sessions: int) -> dict[str, Any]:
    directory = DirectoryTwin()
    for index in range(hosts):
        directory.add(f"host-{index:03d}", slots=-(-sessions // hosts))
    settings = SessionSettings(internal_token=INTERNAL_TOKEN, max_sessions_per_user=0)
    client = await connect_first([endpoint])
    # A prefix per scale: each starts from an empty store.
    store = EtcdStore(client, prefix=f"/bench/{hosts}-{sessions}/sessions/")
    plane = SessionOrchestrator(store, directory, settings)
    rss_before = rss_mib()
    creates: list[float] = []
    try:
        pending = iter(range(sessions))

        async def creator() -> None:
            for _ in pending:
                began = time.perf_counter()
                await plane.create(OPERATOR, SPEC)
                creates.append(time.perf_counter() - began)

        began = time.perf_counter()
        await asyncio.gather(*(creator() for _ in range(CLIENTS)))
        wall = time.perf_counter() - began
        listing_began = time.perf_counter()
        listed, after = 0, None
        while True:
            page = (await plane.list_sessions(OPERATOR, after))[:PAGE]
            listed += len(page)
            if len(page) < PAGE:
                break
            after = key_of(page[-1])
        listing_s = time.perf_counter() - listing_began
        placed = sorted(len(h.display.slots) for h in directory.hosts.values())
        return {
            "hosts": hosts,
            "sessions": sessions,
            "create": summary_ms(creates),
            "creates_per_second": round(sessions / wall, 1),
            "list_all_pages_ms": round(listing_s * 1000, 1),
            "listed": listed,
            "slots_per_host_min_max": [placed[0], placed[-1]],
            "rss_growth_mib": round(rss_mib() - rss_before, 1),
        }
    finally:
        await plane.close()
        with contextlib.suppress(Exception):
            await client.close()


async def session_plane(scales: tuple[tuple[int, int], ...]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with running_etcd() as endpoint:
        for hosts, sessions in scales:
            results[f"{hosts}x{sessions}"] = await one_scale(endpoint, hosts, sessions)
    results["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return results
