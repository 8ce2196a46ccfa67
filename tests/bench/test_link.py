"""The emulated link of figure 2 (bench/link.py): a real namespace, TUN devices
and relay; a TCP connection from the viewer's side takes the round trip and its
bytes arrive whole; nothing is left afterwards."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from bench.link import (
    NAMESPACE,
    ROOT_ADDRESS,
    ROOT_DEVICE,
    LinkProfile,
    in_namespace,
    viewer_link,
)
from bench.link_relay import Direction
from deploy.netns import ip

PAYLOAD = 300_000

# Connects to the root end, reads until the server closes; prints the connect
# time in ms and the bytes read.
CLIENT = """
import socket, sys, time
began = time.perf_counter()
connection = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
connected = (time.perf_counter() - began) * 1000
total = 0
while chunk := connection.recv(65536):
    total += len(chunk)
print(connected, total)
"""


def test_a_packet_waits_for_the_ones_before_it_then_half_the_round_trip() -> None:
    direction = Direction(0, 0, delay_s=0.02, bytes_per_s=1000.0)
    assert direction.arrival(10.0, 100) == pytest.approx(10.0 + 0.1 + 0.02)
    # Sent at once after it: queued behind the first.
    assert direction.arrival(10.0, 100) == pytest.approx(10.0 + 0.2 + 0.02)
    # More than a second of queue: dropped, like a router's full queue.
    for _ in range(9):
        direction.arrival(10.0, 100)
    assert direction.arrival(10.0, 100) is None
    assert direction.dropped == 1


async def test_the_viewers_connections_cross_the_link_with_its_round_trip() -> None:
    async def serve(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"x" * PAYLOAD)
        await writer.drain()
        writer.close()

    async with viewer_link() as link:
        server = await asyncio.start_server(serve, ROOT_ADDRESS, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            for rtt_ms in (0.0, 60.0):
                await link.shape(LinkProfile("test", rtt_ms, 20))
                began = time.perf_counter()
                process = await asyncio.create_subprocess_exec(
                    *in_namespace([sys.executable, "-c", CLIENT, ROOT_ADDRESS, str(port)]),
                    stdout=asyncio.subprocess.PIPE,
                )
                out, _ = await asyncio.wait_for(process.communicate(), 20)
                connect_ms, received = out.split()
                assert int(received) == PAYLOAD
                # The handshake takes a round trip; without the link's delay, much less.
                if rtt_ms:
                    assert float(connect_ms) >= 0.9 * rtt_ms
                else:
                    assert float(connect_ms) < 30
                # 300 kB at 20 Mbit/s: at least 0.12 s on the link.
                assert time.perf_counter() - began >= 0.12
        finally:
            server.close()
            await server.wait_closed()
    assert NAMESPACE not in await ip("netns", "list")
    assert ROOT_DEVICE not in await ip("-br", "link")
