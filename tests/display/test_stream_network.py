"""The stream endpoint on a real network address (README.md, "Network").

A real display service runs in its own network namespace with the address
10.201.0.2 on a veth pair (the test's side is 10.201.0.1; nothing else is ever
addressed). Its websockify and gRPC listen on 10.201.0.2; its VNC servers stay
on the namespace's loopback. The test, from outside, is the edge: it reaches
the slot through the edge's stream path, proves that the slot password is
needed and, with TLS on, that plain ws:// is refused and the edge's upstream
is wss:// verified by the deployment's CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from baton.display.v1 import display_pb2, display_pb2_grpc
from services.display.rfb_client import RfbError, probe
from services.runtime.grpc_client import is_serving, open_channel
from services.runtime.grpc_tls import PLAINTEXT, GrpcTls
from tests.conftest import INTERNAL_TOKEN, require_binary
from tests.edge.harness import OPERATOR_TOKEN, running_stack
from tests.tls_certs import TestCa

NS_ADDRESS = "10.201.0.2"
OUR_ADDRESS = "10.201.0.1"
GRPC_PORT = 50052
WEBSOCKIFY_PORT = 6080
# This helper's display numbers and VNC ports (tests never share them).
DISPLAYS = "1400-1401"
VNC_PORTS = "19600-19601"
REPO = Path(__file__).resolve().parents[2]


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"ip {' '.join(args)}: {done.stderr.strip()} (needs root or CAP_NET_ADMIN)")


@contextlib.contextmanager
def network_namespace() -> Iterator[str]:
    """A namespace holding NS_ADDRESS, linked to ours (OUR_ADDRESS) by a veth pair."""
    require_binary("ip", "iproute2")
    tag = os.getpid() % 100000
    name, ours, theirs = f"baton-net-{tag}", f"bnr{tag}", f"bnn{tag}"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", ours, "type", "veth", "peer", "name", theirs)
        _ip("link", "set", theirs, "netns", name)
        _ip("addr", "add", f"{OUR_ADDRESS}/24", "dev", ours)
        _ip("link", "set", ours, "up")
        _ip("-n", name, "addr", "add", f"{NS_ADDRESS}/24", "dev", theirs)
        _ip("-n", name, "link", "set", theirs, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "link", "del", ours], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


async def _serving(tls: GrpcTls, within_s: float, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + within_s
    async with open_channel(f"{NS_ADDRESS}:{GRPC_PORT}", INTERNAL_TOKEN, tls) as channel:
        while not await is_serving(channel):
            assert process.returncode is None, f"display service exited: {process.returncode}"
            assert time.monotonic() < deadline, "display service not serving in time"
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def display_in_namespace(
    tmp_path: Path, ca: TestCa | None
) -> AsyncIterator[tuple[GrpcTls, display_pb2.Slot]]:
    """The display service inside the namespace; yields its TLS and one slot."""
    require_binary("Xvnc", "tigervnc-standalone-server")
    env = {
        "PATH": os.environ["PATH"],
        "BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value,
        "BATON_DISPLAY_HOST": NS_ADDRESS,
        "BATON_DISPLAY_PORT": str(GRPC_PORT),
        "BATON_WEBSOCKIFY_HOST": NS_ADDRESS,
        "BATON_WEBSOCKIFY_PORT": str(WEBSOCKIFY_PORT),
        "BATON_DISPLAY_NUMBERS": DISPLAYS,
        "BATON_VNC_PORTS": VNC_PORTS,
        "BATON_MAX_SLOTS": "1",
        "BATON_WARM_SLOTS": "0",
        "BATON_DISPLAY_STATE_DIR": str(tmp_path / "display-state"),
        "BATON_LOG_LEVEL": "WARNING",
    }
    tls = PLAINTEXT
    if ca is not None:
        worker = ca.issue("worker", (NS_ADDRESS, "127.0.0.1"))
        env |= {
            "BATON_GRPC_TLS_CERT": str(worker.cert),
            "BATON_GRPC_TLS_KEY": str(worker.key),
            "BATON_GRPC_TLS_CA": str(ca.cert),
            "BATON_STREAM_TLS_CERT": str(worker.cert),
            "BATON_STREAM_TLS_KEY": str(worker.key),
        }
        tls = GrpcTls(
            cert=worker.cert.read_bytes(), key=worker.key.read_bytes(), ca=ca.cert.read_bytes()
        )
    with network_namespace() as namespace:
        process = await asyncio.create_subprocess_exec(
            *["ip", "netns", "exec", namespace, sys.executable, "-m", "services.display"],
            env=env,
            cwd=REPO,
        )
        try:
            await _serving(tls, 30, process)
            async with open_channel(f"{NS_ADDRESS}:{GRPC_PORT}", INTERNAL_TOKEN, tls) as channel:
                reply = await display_pb2_grpc.DisplayServiceStub(channel).AllocateSlot(
                    display_pb2.AllocateSlotRequest(session_id="network-test"), timeout=30
                )
            yield tls, reply.slot
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _stream_through_edge(
    slot: display_pb2.Slot, stream_ca: str | None
) -> tuple[int, int] | int:
    """Connect a viewer through a real edge to `slot`: its screen size, or the close code."""
    async with running_stack(stream_tls_ca=stream_ca) as stack:
        stack.display.websocket_url = slot.websocket_url
        stack.display.vnc_password = slot.vnc_password
        session = await stack.create_session(OPERATOR_TOKEN)
        url = await stack.stream_url(OPERATOR_TOKEN, session["id"])
        try:
            init = await probe(url, open_timeout=10)
        except RfbError:
            # Stream URLs are single-use: a fresh one to read the close code.
            url = await stack.stream_url(OPERATOR_TOKEN, session["id"])
            async with connect(url, subprotocols=["binary"], proxy=None) as viewer:  # type: ignore[list-item]
                await viewer.send(b"RFB 003.008\n" + b"\x01" + b"\x01")
                with pytest.raises(ConnectionClosed):
                    while True:
                        await viewer.recv()
                assert viewer.close_code is not None
                return viewer.close_code
        return init.width, init.height


@pytest.mark.timeout(90)
async def test_the_edge_streams_from_websockify_on_a_network_address(tmp_path: Path) -> None:
    async with display_in_namespace(tmp_path, None) as (_, slot):
        url = slot.websocket_url
        assert url.startswith(f"ws://{NS_ADDRESS}:{WEBSOCKIFY_PORT}/websockify?token=")
        # The stream endpoint faces the network; the VNC server does not.
        assert await _accepts(NS_ADDRESS, WEBSOCKIFY_PORT)
        assert not await _accepts(NS_ADDRESS, 19600)
        # Through the edge, as a viewer: the display's own screen.
        assert await _stream_through_edge(slot, None) == (1280, 720)
        # Straight to websockify without the slot password: VncAuth refuses.
        with pytest.raises(RfbError, match="Authentication failure"):
            await probe(url, "guessed!")
        assert (await probe(url, slot.vnc_password)).width == 1280


@pytest.mark.timeout(90)
async def test_with_tls_the_stream_is_wss_only_and_verified(tmp_path: Path) -> None:
    ca = TestCa(tmp_path / "ca")
    async with display_in_namespace(tmp_path, ca) as (_, slot):
        url = slot.websocket_url
        assert url.startswith(f"wss://{NS_ADDRESS}:{WEBSOCKIFY_PORT}/websockify?token=")
        trusted = ssl.create_default_context(cafile=str(ca.cert))
        assert (await probe(url, slot.vnc_password, ssl=trusted)).width == 1280
        # Plain ws:// on the same port is refused (websockify --ssl-only).
        with pytest.raises(RfbError):
            await probe("ws://" + url.removeprefix("wss://"), slot.vnc_password)
        # Encrypted but without the slot password: VncAuth still refuses.
        with pytest.raises(RfbError, match="Authentication failure"):
            await probe(url, "guessed!", ssl=trusted)
        # The edge streams over wss:// when it trusts the deployment's CA...
        assert await _stream_through_edge(slot, str(ca.cert)) == (1280, 720)
        # ...and refuses a stream endpoint its CA did not sign: 1011, no display.
        other = TestCa(tmp_path / "other", "Someone else's CA")
        assert await _stream_through_edge(slot, str(other.cert)) == 1011
