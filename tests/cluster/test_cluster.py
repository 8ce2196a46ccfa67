"""The cluster issue's tests (issue 10, "Tests"), on `make cluster` run for real.

Every process is the real one: 3 etcd members, 2 worker hosts of 3 slots each
in their own namespaces (Xvnc, websockify, Chromium), 2 session replicas, 2
edges (tests/cluster/conftest.py). The agents' browsers load a page served on
the gateway (the bridge's address) that reports every key it sees
(tests/edge/full_stack.py, `FormSite`).

The tests run in this file's order, each leaving the cluster idle with both
hosts up; the etcd test is last, since the launcher does not restart an etcd
member (two of three keep the quorum for whatever runs after).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import socketio
from websockets.exceptions import ConnectionClosed

from baton.session.v1 import session_pb2, session_pb2_grpc
from services.display.rfb_client import RfbError
from services.runtime.grpc_client import open_channel
from tests.cluster.conftest import DRAIN_TIMEOUT_S, LEASE_TTL_S, SLOTS_PER_HOST
from tests.cluster.launcher import RunningCluster
from tests.conftest import INTERNAL_TOKEN, eventually
from tests.edge.full_stack import FormSite, form_site
from tests.edge.harness import OPERATOR_TOKEN, bearer, user_token
from tests.edge.test_full_stack import RawViewer, raw_viewer

ALICE = user_token("alice")
HOST_LOST = "worker host lost"


@dataclass
class Api:
    """REST through the cluster's edges (index 0: edge A, 1: edge B)."""

    cluster: RunningCluster
    http: aiohttp.ClientSession
    site: FormSite
    created: list[str] = field(default_factory=list)

    async def call(
        self, edge: int, method: str, path: str, token: str = OPERATOR_TOKEN, body: Any = None
    ) -> tuple[int, dict[str, str], Any]:
        url = self.cluster.edges[edge] + path
        async with self.http.request(method, url, json=body, headers=bearer(token)) as reply:
            return reply.status, dict(reply.headers), await reply.json()

    async def create(self, edge: int = 0, token: str = OPERATOR_TOKEN) -> dict[str, Any]:
        """A session whose agent opens the form page, then asks for a person."""
        status, _, answer = await self.call(edge, "POST", "/api/browser-session", token, self.body)
        assert status == 201, answer
        self.created.append(answer["id"])
        return dict(answer)

    @property
    def body(self) -> dict[str, Any]:
        return {
            "task": "wait for a person",
            "url": self.site.form_url,
            "maxSteps": 3,
            "steps": [{"action": "request_user", "reason": "type the word"}],
        }

    async def get(self, session_id: str, edge: int = 0) -> dict[str, Any]:
        status, _, answer = await self.call(edge, "GET", f"/api/browser-session/{session_id}")
        assert status == 200, answer
        return dict(answer)

    async def wait_for(self, session_id: str, key: str, value: str, within_s: float = 45) -> Any:
        deadline = time.monotonic() + within_s
        while True:
            session = await self.get(session_id)
            if session["task"]["status"] == value or session.get(key) == value:
                return session
            assert time.monotonic() < deadline, session
            await asyncio.sleep(0.2)

    async def settled(self, session_id: str, within_s: float = 30) -> dict[str, Any]:
        """The session once it stops changing (the same twice, 0.5 s apart)."""
        deadline = time.monotonic() + within_s
        last = await self.get(session_id)
        while True:
            await asyncio.sleep(0.5)
            now = await self.get(session_id)
            if now == last:
                return now
            assert time.monotonic() < deadline, now
            last = now

    async def control(self, session_id: str, action: str, edge: int, token: str = ALICE) -> Any:
        status, _, answer = await self.call(
            edge, "PUT", f"/api/browser-session/{session_id}/control", token, {"action": action}
        )
        assert status == 200, answer
        return answer

    async def stream_url(self, session_id: str, edge: int, token: str) -> str:
        status, _, answer = await self.call(
            edge, "GET", f"/api/browser-session/{session_id}/stream", token
        )
        assert status == 200, answer
        url: str = answer["url"]
        return url

    async def host_of(self, session_id: str, replica: int = 0) -> str:
        """The worker host a session was placed on (asked of a session replica)."""
        address = self.cluster.session_address(replica)
        async with open_channel(address, INTERNAL_TOKEN) as channel:
            answer = await session_pb2_grpc.SessionServiceStub(channel).GetSession(
                session_pb2.GetSessionRequest(
                    session_id=session_id,
                    actor=session_pb2.Actor(user_id="operator", operator=True),
                )
            )
        return answer.session.placement.host_id

    async def end_all(self) -> None:
        """End what the test created (a FAILED or ENDED session answers 409),
        through whichever edge answers (a test may have killed one)."""
        for session_id in self.created:
            for edge in (1, 0):
                try:
                    status, _, answer = await self.call(
                        edge, "DELETE", f"/api/browser-session/{session_id}"
                    )
                except aiohttp.ClientConnectionError:
                    continue
                assert status in (200, 404, 409), answer
                break
        self.created.clear()


@contextlib.asynccontextmanager
async def api(cluster: RunningCluster) -> AsyncIterator[Api]:
    """Start from an idle cluster; end the sessions made, start again any host
    stopped, and wait until both are idle again."""
    await cluster.wait_idle()
    async with form_site(cluster.gateway) as site, aiohttp.ClientSession() as http:
        client = Api(cluster, http, site)
        try:
            yield client
        finally:
            await client.end_all()
    await cluster.restore()


class Watcher:
    """A Socket.IO client watching sessions through one edge."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        for name in ("session:control_changed", "session:error", "session:ended"):
            self.sio.on(name, self._recorder(name))
        # Step events, with when they arrived (time.monotonic()).
        self.steps: list[tuple[float, dict[str, Any]]] = []
        self.sio.on("session:step", self._step)

    async def _step(self, payload: dict[str, Any]) -> None:
        self.steps.append((time.monotonic(), payload["step"]))

    def _recorder(self, name: str) -> Any:
        async def record(payload: dict[str, Any]) -> None:
            await self.events.put((name, payload))

        return record

    async def next(self, name: str, session_id: str, within_s: float = 30) -> dict[str, Any]:
        """The next `name` event about `session_id` (others are skipped)."""
        skipped: list[tuple[str, dict[str, Any]]] = []
        try:
            async with asyncio.timeout(within_s):
                while True:
                    got, payload = await self.events.get()
                    if got == name and payload["session"]["id"] == session_id:
                        return payload
                    skipped.append((got, payload))
        except TimeoutError:
            raise AssertionError(f"no {name} about {session_id}; got {skipped}") from None


@contextlib.asynccontextmanager
async def watching(url: str, token: str, *session_ids: str) -> AsyncIterator[Watcher]:
    watcher = Watcher()
    await watcher.sio.connect(url, auth={"token": token}, transports=["websocket"])
    try:
        for session_id in session_ids:
            ack = await watcher.sio.call("session:watch", {"id": session_id})
            assert ack["ok"] is True, ack
        yield watcher
    finally:
        await watcher.sio.disconnect()


async def centre_click(viewer: RawViewer, session: dict[str, Any]) -> None:
    viewport = session["viewport"]
    await viewer.click(viewport["width"] // 2, viewport["height"] // 2)


async def typed(viewer: RawViewer, text: str) -> None:
    await viewer.type(text)
    await viewer.sync()


async def until_closed(viewer: RawViewer, within_s: float = 10) -> ConnectionClosed:
    """Type and sync until the stream is closed; how it was closed."""
    async with asyncio.timeout(within_s):
        while True:
            try:
                await typed(viewer, "x")
            except ConnectionClosed as closed:
                return closed
            except RfbError as error:
                assert isinstance(error.__cause__, ConnectionClosed), error
                return error.__cause__


# -- 1. placement ---------------------------------------------------------------


@pytest.mark.timeout(240)
async def test_six_sessions_fill_two_hosts_by_free_capacity_and_a_seventh_gets_429(
    cluster: RunningCluster,
) -> None:
    async with api(cluster) as client:
        held = {"w1": 0, "w2": 0}
        for _ in range(2 * SLOTS_PER_HOST):
            session = await client.create(edge=len(client.created) % 2)
            held[await client.host_of(session["id"])] += 1
            # Each goes to the host with the most free slots: never 2 apart.
            assert abs(held["w1"] - held["w2"]) <= 1, held
        assert held == {"w1": SLOTS_PER_HOST, "w2": SLOTS_PER_HOST}
        records = await cluster.records()
        assert {r.host_id: r.held for r in records.values()} == held

        started = time.monotonic()
        status, headers, answer = await client.call(
            1, "POST", "/api/browser-session", body=client.body
        )
        elapsed = time.monotonic() - started
        assert status == 429, answer
        assert answer["error"]["code"] == "resource_exhausted"
        assert int(headers["Retry-After"]) > 0
        # At once, never a hang (a generous bound, not a performance target).
        assert elapsed < 5
        # The refusal left no session behind.
        _, _, listing = await client.call(0, "GET", "/api/browser-session")
        assert sorted(s["id"] for s in listing["sessions"]) == sorted(client.created)


# -- 2. across edges ------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_control_through_edge_a_gates_the_stream_through_edge_b(
    cluster: RunningCluster,
) -> None:
    async with api(cluster) as client:
        session = await client.create(edge=0, token=ALICE)
        session_id = session["id"]
        session = await client.wait_for(session_id, "state", "WAITING_FOR_USER")
        alice_url = await client.stream_url(session_id, 1, ALICE)
        other_url = await client.stream_url(session_id, 1, OPERATOR_TOKEN)
        assert alice_url.startswith(cluster.edges[1].replace("http", "ws"))
        async with (
            raw_viewer(alice_url) as alice,
            raw_viewer(other_url) as other,
            watching(cluster.edges[1], ALICE, session_id) as watcher,
        ):
            # The agent holds control: nothing from the stream reaches the page.
            await centre_click(alice, session)
            await typed(alice, "ab")

            await client.control(session_id, "take_control", edge=0)
            changed = await watcher.next("session:control_changed", session_id)
            assert changed["action"] == "take_control"
            assert changed["session"]["controllerUserId"] == "alice"
            await centre_click(alice, session)
            await typed(alice, "ok")
            await client.site.wait_until(lambda: len(client.site.keys()) >= 2)
            # The other viewer's keys never reach the page; alice's after them do.
            await centre_click(other, session)
            await typed(other, "no")
            await typed(alice, "z")
            await client.site.wait_until(lambda: len(client.site.keys()) >= 3)
            assert client.site.keys() == "okz"


# -- 3. an edge killed ----------------------------------------------------------


@pytest.mark.timeout(120)
async def test_viewers_of_a_killed_edge_reconnect_to_the_other_and_keep_their_roles(
    cluster: RunningCluster,
) -> None:
    async with api(cluster) as client:
        session = await client.create(edge=1, token=ALICE)
        session_id = session["id"]
        await client.wait_for(session_id, "state", "WAITING_FOR_USER")
        session = await client.control(session_id, "take_control", edge=1)
        bystander = await client.create(edge=1)
        await client.wait_for(bystander["id"], "state", "WAITING_FOR_USER")
        bystander = await client.settled(bystander["id"])
        async with (
            raw_viewer(await client.stream_url(session_id, 0, ALICE)) as alice,
            raw_viewer(await client.stream_url(session_id, 0, OPERATOR_TOKEN)) as other,
        ):
            await centre_click(alice, session)
            await typed(alice, "a")
            await client.site.wait_until(lambda: client.site.keys() == "a")

            killed_at = await cluster.kill_edge(0)
            for viewer in (alice, other):
                await until_closed(viewer)

        # A fresh stream token from the other edge; the roles are the session's.
        async with (
            raw_viewer(await client.stream_url(session_id, 1, ALICE)) as alice,
            raw_viewer(await client.stream_url(session_id, 1, OPERATOR_TOKEN)) as other,
        ):
            await centre_click(other, session)
            await typed(other, "no")
            await typed(alice, "b")
            await client.site.wait_until(lambda: len(client.site.keys()) >= 2)
            assert client.site.keys() == "ab"

        # Nothing else changed: the session's control, the bystander.
        after = await client.get(session_id, edge=1)
        assert (after["state"], after["controllerUserId"], after["version"]) == (
            "USER_CONTROL",
            "alice",
            session["version"],
        )
        assert await client.get(bystander["id"], edge=1) == bystander
        # The launcher restarts the edge; it serves again.
        await cluster.await_edge_restart(0, killed_at)
        assert (await client.get(session_id, edge=0))["version"] == session["version"]


# -- 4. a worker host killed ----------------------------------------------------


@pytest.mark.timeout(150)
async def test_a_killed_worker_host_fails_its_sessions_and_the_other_goes_on(
    cluster: RunningCluster,
) -> None:
    async with api(cluster) as client:
        first = await client.create(edge=0, token=ALICE)
        second = await client.create(edge=1, token=ALICE)
        hosts = {
            await client.host_of(first["id"]): first,
            await client.host_of(second["id"]): second,
        }
        assert sorted(hosts) == ["w1", "w2"]
        doomed, spared = hosts["w1"]["id"], hosts["w2"]["id"]
        await client.wait_for(doomed, "state", "WAITING_FOR_USER")
        await client.wait_for(spared, "state", "WAITING_FOR_USER")
        spared_before = await client.settled(spared)
        async with (
            watching(cluster.edges[0], ALICE, doomed, spared) as watcher,
            raw_viewer(await client.stream_url(doomed, 1, ALICE)) as viewer,
        ):
            killed = time.monotonic()
            cluster.kill_worker("w1")
            error = await watcher.next("session:error", doomed, LEASE_TTL_S + 10)
            ended = await watcher.next("session:ended", doomed, 5)
            failed_after = time.monotonic() - killed
            assert HOST_LOST in error["message"]
            assert ended["session"]["state"] == "FAILED"
            assert HOST_LOST in ended["reason"]
            assert failed_after < LEASE_TTL_S + 2, failed_after
            # The stream is closed with a clear code: the display went away
            # (1011) or the session ended (1000).
            closed = await until_closed(viewer)
            assert closed.rcvd is not None, closed
            assert closed.rcvd.code in (1000, 1011), closed.rcvd
            await asyncio.to_thread(
                cluster.launcher.wait_for,
                "baton-cluster: worker w1 was killed by SIGKILL; not restarted",
                10,
            )

        failed = await client.get(doomed)
        assert (failed["state"], failed.get("endedReason")) == ("FAILED", HOST_LOST)
        assert await client.get(spared) == spared_before
        # New sessions go to the live host.
        fresh = await client.create()
        assert await client.host_of(fresh["id"]) == "w2"
        assert set(await cluster.records()) == {"w2"}


# -- 6. a worker host drained -----------------------------------------------------


@pytest.mark.timeout(150)
async def test_sigterm_drains_a_worker_host(cluster: RunningCluster) -> None:
    async with api(cluster) as client:
        by_host: dict[str, list[str]] = {"w1": [], "w2": []}
        for _ in range(4):
            session = await client.create()
            by_host[await client.host_of(session["id"])].append(session["id"])
        assert [len(ids) for ids in by_host.values()] == [2, 2]
        for session_id in by_host["w2"]:
            await client.wait_for(session_id, "state", "WAITING_FOR_USER")

        termed = time.monotonic()
        cluster.term_worker("w2")
        deadline = termed + 5
        while not (await cluster.records())["w2"].draining:
            assert time.monotonic() < deadline, "w2 never said it is draining"
            await asyncio.sleep(0.1)
        # No new placement there: the one free slot left is w1's, then none
        # (w2's free slot is not offered).
        last = await client.create()
        assert await client.host_of(last["id"]) == "w1"
        status, _, answer = await client.call(0, "POST", "/api/browser-session", body=client.body)
        assert status == 429, answer

        # Its live sessions go on: one is taken over and ended as usual.
        kept, ended = by_host["w2"]
        await client.control(ended, "take_control", edge=1, token=OPERATOR_TOKEN)
        status, _, answer = await client.call(1, "DELETE", f"/api/browser-session/{ended}")
        assert (status, answer["state"]) == (200, "ENDED"), answer
        going_on = await client.get(kept)
        assert (going_on["state"], going_on["task"]["status"]) == (
            "AI_CONTROL",
            "WAITING_FOR_USER",
        )
        assert time.monotonic() - termed < DRAIN_TIMEOUT_S, "the checks outlasted the drain"

        # Then the drain timeout passes: the host stops, its last session fails.
        await asyncio.to_thread(
            cluster.launcher.wait_for,
            "baton-cluster: worker w2 exited with status 0; not restarted",
            DRAIN_TIMEOUT_S + 40,
        )
        stopped_after = time.monotonic() - termed
        # The drain, then the display's and the automation's own stops.
        assert DRAIN_TIMEOUT_S <= stopped_after < DRAIN_TIMEOUT_S + 30, stopped_after
        failed = await client.wait_for(kept, "state", "FAILED", within_s=10)
        assert failed.get("endedReason") == HOST_LOST
        assert set(await cluster.records()) == {"w1"}


# -- 7. a session replica killed while its task runs ------------------------------


@pytest.mark.timeout(150)
async def test_a_killed_session_replica_s_task_goes_on_followed_by_the_other(
    cluster: RunningCluster,
) -> None:
    """Edge A's replica (session-1) starts and follows the task; it is killed
    mid-task. The task runs on in automation, session-2 claims it when
    session-1's lease expires and reads on after the last event applied: the
    watcher on edge B sees every step event exactly once, and a take_control
    during the task still pauses the agent before the person has control."""
    waits = 14
    async with api(cluster) as client:
        body = {
            "task": "wait, step by step",
            "url": client.site.form_url,
            "maxSteps": waits,
            "steps": [{"action": "wait", "ms": 600} for _ in range(waits)],
        }
        status, _, session = await client.call(0, "POST", "/api/browser-session", ALICE, body)
        assert status == 201, session
        client.created.append(session["id"])
        session_id = session["id"]
        async with watching(cluster.edges[1], ALICE, session_id) as watcher:
            await eventually(lambda: any(s["index"] == 2 for _, s in watcher.steps), 30)
            await cluster.restart_session_replica(0)
            # Events made while nobody followed arrive once session-2 adopts.
            before = len(watcher.steps)
            await eventually(lambda: len(watcher.steps) > before + 1, 30)
            # The longest silence the watcher saw: the follower's hand-over.
            gap = watcher.steps[before][0] - watcher.steps[before - 1][0]
            # The person takes over mid-task, through edge B (session-2).
            taken = await client.control(session_id, "take_control", edge=1)
            assert taken["state"] == "USER_CONTROL"
            taken_at = time.monotonic()
            await asyncio.sleep(2)
            started_meanwhile = [
                s for at, s in watcher.steps if at > taken_at and s["status"] == "started"
            ]
            assert started_meanwhile == [], "the agent acted while the person had control"
            await client.control(session_id, "return_control", edge=0)
            done = await client.wait_for(session_id, "state", "COMPLETED", within_s=60)
        # Step 0 opens the URL; the waits are steps 1 to `waits`.
        expected = [(i, st) for i in range(waits + 1) for st in ("started", "succeeded")]
        # The person's return is reported once, as a step of its own (docs/steps.md).
        handbacks = [s for _, s in watcher.steps if s["action"] == "handback"]
        assert len(handbacks) == 1 and handbacks[0]["handback"]["reason"] == "return_control"
        seen = [(s["index"], s["status"]) for _, s in watcher.steps if s["action"] != "handback"]
        # A step interrupted by the pause may be retried (started again) after it.
        assert sorted(set(seen)) == sorted(set(expected)), seen
        assert len(seen) == len(set(seen)), f"an event came twice: {seen}"
        stored = [(s["index"], s["status"]) for s in done["steps"] if s["action"] != "handback"]
        assert stored == seen
        assert done["task"]["stepsCompleted"] == waits + 1
        print(f"session replica killed: step events paused for {gap:.2f} s")


async def create_within(client: Api, edge: int, token: str, within_s: float) -> dict[str, Any]:
    """A create, asked again while it answers 503 (no longer than `within_s`)."""
    deadline = time.monotonic() + within_s
    while True:
        status, _, answer = await client.call(
            edge, "POST", "/api/browser-session", token, client.body
        )
        if status != 503 or time.monotonic() > deadline:
            assert status == 201, answer
            client.created.append(answer["id"])
            return dict(answer)
        await asyncio.sleep(0.2)


# -- 5. an etcd member killed (last: the launcher does not restart it) ------------


async def listing(client: Api) -> dict[str, str]:
    """Every session the cluster knows: id -> whether it is live."""
    _, _, answer = await client.call(0, "GET", "/api/browser-session?pageSize=500")
    assert answer["nextPageToken"] is None
    return {
        s["id"]: "ended" if s["state"] in ("ENDED", "FAILED") else "live"
        for s in answer["sessions"]
    }


def etcd_leader(endpoints: list[str]) -> str:
    """The client endpoint of the etcd member that leads now."""
    statuses = {}
    for endpoint in endpoints:
        request = urllib.request.Request(
            f"http://{endpoint}/v3/maintenance/status", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as reply:
            statuses[endpoint] = json.load(reply)
    leaders = [e for e, s in statuses.items() if s["header"]["member_id"] == s["leader"]]
    assert len(leaders) == 1, statuses
    return leaders[0]


@pytest.mark.timeout(120)
async def test_killing_the_etcd_member_in_use_loses_nothing(
    cluster: RunningCluster, record_property: Callable[[str, object], None]
) -> None:
    async with api(cluster) as client:
        sessions = [await client.create(edge=i % 2) for i in range(2)]
        ids = sorted(s["id"] for s in sessions)
        for session_id in ids:
            await client.wait_for(session_id, "state", "WAITING_FOR_USER")

        failures: list[tuple[float, float]] = []  # (first failure, next success)
        requests = 0

        async def load(stop: asyncio.Event) -> None:
            nonlocal requests
            failing_since: float | None = None
            actions = ["pause", "resume"]
            while not stop.is_set():
                edge = requests % 2
                session_id = ids[requests % len(ids)]
                path = f"/api/browser-session/{session_id}"
                try:
                    if requests % 3 == 2:
                        action = actions[(requests // 3) % 2]
                        status, _, _ = await client.call(
                            edge, "PUT", path + "/control", body={"action": action}
                        )
                    else:
                        status, _, _ = await client.call(edge, "GET", path)
                    # A refusal (409: already paused) is an answer; 5xx is a failure.
                    ok = status < 500
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                now = time.monotonic()
                if not ok and failing_since is None:
                    failing_since = now
                elif ok and failing_since is not None:
                    failures.append((failing_since, now))
                    failing_since = None
                requests += 1
                await asyncio.sleep(0.02)
            if failing_since is not None:
                failures.append((failing_since, time.monotonic()))

        listed_before = await listing(client)
        assert set(ids) <= set(listed_before)
        # The member every service reached first (the first endpoint), so that
        # their connections must move; it may or may not lead.
        members = cluster.etcd_pids()
        index = 0
        was_leader = etcd_leader(cluster.etcd_endpoints) == cluster.etcd_endpoints[0]
        errors_before = len(cluster.launcher.errors)
        stop = asyncio.Event()
        loader = asyncio.create_task(load(stop))
        await asyncio.sleep(2)
        before = requests
        os.kill(members[f"etcd-{index + 1}"], signal.SIGKILL)
        await asyncio.sleep(8)
        stop.set()
        await loader
        assert requests - before > 50, "the load was not running"
        longest = max((end - start for start, end in failures), default=0.0)
        record_property("longest_failure_window_s", round(longest, 3))
        print(
            f"etcd member killed (leader: {was_leader}): {requests - before} requests, "
            f"longest failure {longest:.3f} s"
        )
        # Etcd's election takes about a second (its election timeout, 1 s);
        # a generous bound: no request fails for long.
        assert longest < 5, failures
        cluster.launcher.wait_for(
            f"baton-cluster: etcd member etcd-{index + 1} was killed by SIGKILL; not restarted", 5
        )

        # No session lost: the listing is the same (earlier tests' ended
        # sessions included); ours are live.
        assert await listing(client) == listed_before
        for session_id in ids:
            assert (await client.get(session_id, edge=1))["state"] in ("AI_CONTROL", "PAUSED")

        # The positive marker: the services' connections did move.
        await cluster.launcher.wait_for_error_line(
            "does not answer; now using", errors_before, within_s=10
        )
        # Every replica's users of etcd moved to a live member: a user's create
        # (the per-user lock, the store, the task claim) and a handoff (the fence)
        # work through both edges, i.e. through both session replicas.
        for edge in (0, 1):
            # A replica whose etcd connection has not been used since the kill
            # moves on its first call: that call may answer 503, within the bound.
            fresh = await create_within(client, edge, ALICE, within_s=5)
            await client.wait_for(fresh["id"], "state", "WAITING_FOR_USER")
            assert (await client.control(fresh["id"], "take_control", edge))[
                "state"
            ] == "USER_CONTROL"
            assert (await client.control(fresh["id"], "return_control", 1 - edge))[
                "state"
            ] == "AI_CONTROL"
