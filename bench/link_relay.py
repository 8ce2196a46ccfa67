"""The emulated link's relay (bench/link.py): IP packets between two TUN devices,
each delivered half a round trip after it was sent, no faster than the rate.

    python -m bench.link_relay ROOT_FD VIEWER_DEVICE RTT_MS RATE_MBIT

Run inside the viewer's namespace, with the root namespace's device already
open as ROOT_FD. Each direction is a queue with a serialisation clock: a packet
leaves the queue when the link has sent the ones before it (its size over the
rate), and arrives half the round trip later. A queue holding more than a
second of traffic drops, as a router's would. Prints "ready", runs until
SIGTERM or stdin closes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

from bench.link import open_tun

MAX_PACKET = 65535


class Direction:
    """One way across the link."""

    def __init__(self, source: int, target: int, delay_s: float, bytes_per_s: float) -> None:
        self.source = source
        self.target = target
        self.delay_s = delay_s
        self.bytes_per_s = bytes_per_s
        # When the link finishes sending what it has been given so far.
        self.busy_until = 0.0
        self.dropped = 0

    def arrival(self, now: float, size: int) -> float | None:
        """When a packet of `size` bytes sent now arrives; None when it is dropped."""
        start = max(now, self.busy_until)
        if start - now > 1.0:
            self.dropped += 1
            return None
        self.busy_until = start + size / self.bytes_per_s
        return self.busy_until + self.delay_s

    def on_readable(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                packet = os.read(self.source, MAX_PACKET)
            except BlockingIOError:
                return
            arrival = self.arrival(time.monotonic(), len(packet))
            if arrival is not None:
                loop.call_at(arrival, self._deliver, packet)

    def _deliver(self, packet: bytes) -> None:
        try:
            os.write(self.target, packet)
        except OSError:
            # The device went down (the link is being removed): the packet is lost.
            self.dropped += 1


async def relay(root_fd: int, viewer_device: str, rtt_ms: float, rate_mbit: float) -> None:
    loop = asyncio.get_running_loop()
    # loop.call_at takes loop.time(), which is time.monotonic() on Linux.
    assert abs(loop.time() - time.monotonic()) < 0.01
    viewer_fd = open_tun(viewer_device)
    os.set_blocking(root_fd, False)
    delay_s = rtt_ms / 2000
    bytes_per_s = rate_mbit * 1e6 / 8
    out = Direction(viewer_fd, root_fd, delay_s, bytes_per_s)
    back = Direction(root_fd, viewer_fd, delay_s, bytes_per_s)
    loop.add_reader(viewer_fd, out.on_readable, loop)
    loop.add_reader(root_fd, back.on_readable, loop)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()


def main() -> None:
    root_fd, viewer_device, rtt_ms, rate_mbit = sys.argv[1:5]
    asyncio.run(relay(int(root_fd), viewer_device, float(rtt_ms), float(rate_mbit)))


if __name__ == "__main__":
    main()
