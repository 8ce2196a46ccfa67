"""The autoscaling signal on the edge's /metrics, from a real session service
over a directory of worker hosts (the registry as etcd shows it, in memory)."""

from __future__ import annotations

import re

import aiohttp

from services.edge.auth import Authenticator
from services.edge.server import start_edge_server
from services.edge.settings import EdgeSettings
from services.session.server import start_session_server
from services.session.settings import SessionSettings
from tests.conftest import INTERNAL_TOKEN
from tests.edge.harness import JWT_SECRET, OPERATOR_TOKEN, bearer, user_token
from tests.session.twins import DirectoryTwin

CREATE = {"task": "t", "url": "http://127.0.0.1:9/"}


def gauge(text: str, name: str) -> int:
    found = re.search(rf"^{re.escape(name)} (\d+)$", text, re.MULTILINE)
    assert found, f"{name} missing from:\n{text}"
    return int(found.group(1))


async def test_demand_is_held_slots_plus_capacity_refusals_plus_headroom() -> None:
    directory = DirectoryTwin()
    full = directory.add("full", slots=2)
    draining = directory.add("old", slots=4)
    draining.draining = True
    session_server = await start_session_server(
        SessionSettings(internal_token=INTERNAL_TOKEN, max_sessions_per_user=1),
        directory=directory,
    )
    settings = EdgeSettings(
        internal_token=INTERNAL_TOKEN,
        port=0,
        session_address=f"127.0.0.1:{session_server.port}",
        api_token=OPERATOR_TOKEN,
        jwt_secret=JWT_SECRET,
        slot_headroom=3,
    )
    edge = await start_edge_server(
        settings, Authenticator(OPERATOR_TOKEN, JWT_SECRET, jwt_max_lifetime_s=86400)
    )
    url = f"http://127.0.0.1:{edge.port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def create(user: str) -> int:
                async with http.post(
                    f"{url}/api/browser-session", json=CREATE, headers=bearer(user_token(user))
                ) as answer:
                    return answer.status

            async def scrape() -> str:
                async with http.get(f"{url}/metrics", headers=bearer(OPERATOR_TOKEN)) as answer:
                    assert answer.status == 200
                    return await answer.text()

            text = await scrape()
            assert gauge(text, "baton_slot_demand") == 3  # headroom alone
            assert (await create("alice"), await create("bob")) == (201, 201)
            # alice's second session is refused by her quota: 429, but not for
            # want of a slot, so it is no demand for another host.
            assert await create("alice") == 429
            # carol's is refused because every host is full (the draining one
            # takes nothing): that is demand.
            assert await create("carol") == 429
            assert len(full.display.slots) == 2
            text = await scrape()
            assert gauge(text, "baton_slots_total") == 2
            assert gauge(text, "baton_slots_held") == 2
            assert 'baton_worker_hosts{state="serving"} 1' in text
            assert 'baton_worker_hosts{state="draining"} 1' in text
            assert gauge(text, "baton_capacity_refusals_total") == 1
            assert gauge(text, "baton_slot_refusals_recent") == 1
            assert gauge(text, "baton_slot_headroom") == 3
            assert gauge(text, "baton_slot_demand") == 2 + 1 + 3
    finally:
        for host in directory.hosts.values():
            for feed in host.automation.feeds.values():
                feed.put_nowait(None)
        await edge.stop()
        await session_server.stop(grace=1)
