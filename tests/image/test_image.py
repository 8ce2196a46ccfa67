"""Issue 11, "Container image and compose", run for real (make image-test): the
image built from deploy/Dockerfile runs as uid 10001 with no build tools; each
service's container passes the image's HEALTHCHECK; deploy/compose.yaml, brought
up by podman-compose on our machines' override, shows a session's page to an
RFB viewer connected through an edge container; and nothing is left after."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from deploy import compose_network
from services.display.rfb_client import Framebuffer, RfbError, open_rfb
from tests.image.conftest import (
    BATON_UID,
    BROWSER_UIDS,
    PODMAN_ENV,
    ROOT,
    container_processes,
    container_report,
    containers,
    exited_containers,
    healthy,
    ip,
    podman,
    service_args,
    settled_container_processes,
    watched_containers,
)

# The first test also pays for the image's build (from a cold cache, debootstrap
# included: a few minutes); each test bounds its own waits.
pytestmark = [pytest.mark.image, pytest.mark.timeout(720)]

INTERNAL_TOKEN = "dev-only-internal-token-0123456789abcdefghij"
OPERATOR_TOKEN = "dev-only-operator-token"
# The page's colour, which the viewer must see (no browser UI is this colour).
COLOUR = (32, 176, 96)
PAGE = f"""<!doctype html><html><head><title>colour</title>
<style>html, body {{ margin: 0; height: 100%; background: rgb{COLOUR}; }}</style>
</head><body></body></html>"""
HEALTHCHECK = ["/opt/baton/.venv/bin/python", "-m", "services.runtime.healthcheck"]
COMPOSE = [
    str(ROOT / ".venv" / "bin" / "podman-compose"),
    "-f",
    str(ROOT / "deploy" / "compose.yaml"),
    "-f",
    str(ROOT / "deploy" / "compose.podman.yaml"),
]


def test_the_image_runs_as_baton_and_has_no_build_tools(image: str) -> None:
    inspected = json.loads(podman("image", "inspect", image))[0]
    assert inspected["Config"]["User"] == "10001:10001"
    # podman shows the (docker-format) HEALTHCHECK beside Config.
    assert "services.runtime.healthcheck" in " ".join(inspected["Healthcheck"]["Test"])
    script = (
        "id -u; id -g; cat /etc/subuid /etc/subgid; "
        "for p in python3 chromium Xvnc etcd newuidmap gcc cc g++ make npm node pip pip3; do "
        'command -v "$p" >/dev/null && echo "has $p"; done; '
        "dpkg-query -W -f='${Package}\\n' gcc cpp npm nodejs 2>/dev/null; true"
    )
    with watched_containers() as running:
        out = running.run_once(
            "baton-it-tools", "--network", "none", image, "sh", "-c", script
        ).split("\n")
        assert out[:4] == ["10001", "10001", "baton:300000:65536", "baton:300000:65536"]
        has = {line.removeprefix("has ") for line in out if line.startswith("has ")}
        # Positive markers: what the services run is there.
        assert {"python3", "chromium", "Xvnc", "etcd", "newuidmap"} <= has
        assert not has & {"gcc", "cc", "g++", "make", "npm", "node", "pip", "pip3"}, has
        assert [line for line in out[4:] if line and not line.startswith("has ")] == []


@contextlib.contextmanager
def solo_namespace() -> Iterator[str]:
    """A network namespace with only loopback, like one pod's (removed after)."""
    name = "baton-image-solo"
    subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
    ip("netns", "add", name)
    ip("-n", name, "link", "set", "lo", "up")
    try:
        yield f"ns:/run/netns/{name}"
    finally:
        ip("netns", "delete", name)


def test_each_service_s_container_passes_its_healthcheck(image: str) -> None:
    """display, automation, session and edge, one container each in one
    namespace (a pod: loopback between them, display and automation sharing
    /tmp); each passes the image's own HEALTHCHECK, which finds its service from
    the container's command and dials what that service's settings say."""
    names = {
        "display": "baton-it-display",
        "automation": "baton-it-automation",
        "session": "baton-it-session",
        "edge": "baton-it-edge",
    }
    common = {"BATON_INTERNAL_TOKEN": INTERNAL_TOKEN, "HOME": "/tmp"}
    tmp = Path(tempfile.mkdtemp(prefix="baton-image-tmp-"))
    tmp.chmod(0o1777)
    try:
        with solo_namespace() as network, watched_containers() as running:
            shared_tmp = ["-v", f"{tmp}:/tmp"]
            running.run(
                names["display"],
                *service_args(
                    image,
                    network,
                    "services.display",
                    *shared_tmp,
                    BATON_MAX_SLOTS="2",
                    BATON_WARM_SLOTS="1",
                    BATON_WEBSOCKIFY_PORT="6080",
                    **common,
                ),
            )
            running.run(
                names["automation"],
                *service_args(
                    image,
                    network,
                    "services.automation",
                    *shared_tmp,
                    "--security-opt",
                    "seccomp=unconfined",
                    "--shm-size",
                    "512m",
                    **common,
                ),
            )
            running.run(
                names["session"], *service_args(image, network, "services.session", **common)
            )
            running.run(
                names["edge"],
                *service_args(
                    image, network, "services.edge", BATON_API_TOKEN=OPERATOR_TOKEN, **common
                ),
            )
            # Each check run by hand (no systemd here to time them: deploy/README.md),
            # once a second; a container that exits meanwhile ends the wait at once
            # (watched_containers then reports every container's state and log).
            waiting = dict(names)
            last: dict[str, str] = {}
            deadline = time.monotonic() + 150
            while True:
                for service, name in list(waiting.items()):
                    ok, said = healthy(name)
                    if ok:
                        del waiting[service]
                    last[service] = said
                if not waiting or time.monotonic() > deadline:
                    break
                exited = running.exited(within_s=1)
                assert not exited, f"exited before all were healthy: {exited}"
            assert not waiting, f"not healthy within 150 s: {last}"
            # The session's health depended on its worker host: the edge's
            # /healthz passing says the session service saw display and automation.
            ok, said = healthy(names["edge"])
            assert ok, said
            # And a service that stops is unhealthy: the check is not a constant.
            # (From outside: PID 1 of a PID namespace ignores SIGSTOP sent inside.)
            podman("kill", "--signal", "STOP", names["edge"])
            ok, _ = healthy(names["edge"])
            check = subprocess.run(
                ["podman", "exec", names["edge"], *HEALTHCHECK],
                env=PODMAN_ENV,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            podman("kill", "--signal", "CONT", names["edge"])
            assert not ok
            # One line, no traceback (services/runtime/healthcheck.py).
            assert (check.returncode, check.stderr) == (
                1,
                "unhealthy: GET http://127.0.0.1:8080/healthz: timed out\n",
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert not set(names.values()) & set(containers())


async def serve_page(host: str) -> tuple[web.AppRunner, str]:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/colour", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, 0).start()
    return runner, f"http://{host}:{runner.addresses[0][1]}/colour"


def rest(edge: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        edge + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def compose(*args: str, timeout: float = 180) -> None:
    env = {**PODMAN_ENV, "BATON_IMAGE": "localhost/baton:test"}
    done = subprocess.run(
        [*COMPOSE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"podman-compose {' '.join(args)}:\n{done.stderr[-3000:]}"


def near(pixel: tuple[int, int, int], colour: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 8 for a, b in zip(pixel, colour, strict=True))


async def frame_through(url: str) -> Framebuffer:
    async with open_rfb(url, open_timeout=10) as client:
        await client.handshake(shared=True)
        return await asyncio.wait_for(client.read_framebuffer(), 20)


def composed_containers() -> list[str]:
    return [name for name in containers() if name.startswith("baton_")]


@contextlib.asynccontextmanager
async def composed_cluster() -> AsyncIterator[dict[str, str]]:
    """compose.yaml up under podman in compose_network's namespaces; down -v
    and the namespaces removed after, whatever happened. Before that, when the
    block fails, every container's state and log are added to its failure; when
    it passes but a container exited (or was restarted), the test fails with that one's."""
    await compose_network.up()
    try:
        try:
            compose("up", "-d", "--no-build")
            yield {
                "edge-1": f"http://{compose_network.address_of('edge-1')}:8080",
                "edge-2": f"http://{compose_network.address_of('edge-2')}:8080",
            }
        except BaseException as exc:
            exc.add_note(container_report(composed_containers()))
            raise
        if exited := exited_containers(composed_containers()):
            raise AssertionError(f"exited during the test:\n{container_report(exited)}")
    finally:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            compose("down", "-v", "-t", "10", timeout=120)
        await compose_network.down()


async def test_the_composed_cluster_shows_a_session_s_page_through_an_edge(image: str) -> None:
    assert settled_container_processes() == [], "some container already runs"
    async with composed_cluster() as edges:
        # On the bridge's address, which the worker hosts' browsers reach.
        runner, page_url = await serve_page(compose_network.gateway())
        try:
            services = ["etcd", "w1-display", "w1-automation", "w2-display", "w2-automation"]
            services += ["session-1", "session-2", "edge-1", "edge-2"]
            names = [f"baton_{service}_1" for service in services]
            waiting = set(names)
            deadline = time.monotonic() + 180
            # Each check run by hand (no systemd here), once a second; a container
            # that exits (or restarts) meanwhile ends the wait (composed_cluster
            # then reports every container's state and log).
            while waiting and time.monotonic() < deadline:
                waiting = {
                    name for name in waiting if not (await asyncio.to_thread(healthy, name))[0]
                }
                exited = await asyncio.to_thread(exited_containers, names)
                assert not exited, f"exited before all were healthy: {exited}"
                await asyncio.sleep(1)
            assert not waiting, f"not healthy within 180 s: {sorted(waiting)}"

            # Created through edge 1, watched through edge 2 (both containers).
            status, session = await asyncio.to_thread(
                rest,
                edges["edge-1"],
                "POST",
                "/api/browser-session",
                {
                    "task": "show the colour",
                    "url": page_url,
                    "maxSteps": 3,
                    "steps": [{"action": "request_user", "reason": "look at it"}],
                },
            )
            assert status == 201, session
            path = f"/api/browser-session/{session['id']}/stream"
            centre: tuple[int, int, int] | None = None
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                status, stream = await asyncio.to_thread(rest, edges["edge-2"], "GET", path)
                assert status == 200, stream
                assert stream["url"].startswith("ws://10.201.0.32:8080/"), stream
                with contextlib.suppress(RfbError, TimeoutError):
                    frame = await frame_through(stream["url"])
                    centre = frame.rgb(frame.width // 2, frame.height * 2 // 3)
                    if near(centre, COLOUR):
                        break
                await asyncio.sleep(1)
            assert centre is not None and near(centre, COLOUR), (
                f"the viewer saw {centre}, not the page's {COLOUR}"
            )
            # Each browser runs as its display's own uid, sandboxed (README.md,
            # "Isolation"), which the image makes possible (newuidmap, subuids);
            # also the positive marker for the check after.
            running = container_processes()
            browsers = [c for _, uid, c in running if uid in BROWSER_UIDS and "chromium" in c]
            assert browsers, running
            assert not [c for c in browsers if "--no-sandbox" in c], browsers
            assert {uid for _, uid, c in running if "services." in c} == {BATON_UID}
            status, _ = await asyncio.to_thread(
                rest, edges["edge-1"], "DELETE", f"/api/browser-session/{session['id']}"
            )
            assert status in (200, 204)
        finally:
            await runner.cleanup()
    # Nothing is left: containers, pods, volumes, namespaces, links, processes.
    assert [c for c in containers() if c.startswith("baton_")] == []
    assert podman("pod", "ps", "-q") == ""
    assert [v for v in podman("volume", "ls", "-q").split() if v.startswith("baton_")] == []
    assert await compose_network.leftovers() == ([], [])
    assert settled_container_processes() == []
