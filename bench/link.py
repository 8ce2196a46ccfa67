"""Figure 2 of the second round: a viewer behind an emulated link.

The viewer runs in a network namespace of its own; its only way out is a
point-to-point TUN device whose packets a relay (`bench/link_relay.py`) moves to
a TUN device in the root namespace and back, each one after half the round trip
and no faster than the link's rate. TCP runs end to end across it, so the
viewer's connections see the round trip and the rate as they would on a real
link (slow start, ACK clocking), while the stack (edge, websockify, displays)
talks over loopback as it does on one host.

Why not `tc netem`: this machine's kernel has no netem (CONFIG_NET_SCH_NETEM is
not set, /proc/config.gz), and no fq qdisc for a BPF delay either. The relay is
the same on the edge and the bare paths, so its own cost falls on both.

The stack listens on the root end (BATON_EDGE_HOST, BATON_WEBSOCKIFY_HOST),
the only address the namespace reaches. Names are the bench's own
(`baton-bench-link` namespace, `baton-blr`/`baton-blv` devices); what a killed
run left is removed by the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from deploy.netns import ip, remove, require_privileges

NAMESPACE = "baton-bench-link"
ROOT_DEVICE = "baton-blr"
VIEWER_DEVICE = "baton-blv"
# Apart from make cluster's 10.200.0.0/24 and the compose network's 10.201.0.0/24.
ROOT_ADDRESS = "10.213.0.1"
VIEWER_ADDRESS = "10.213.0.2"

# linux/if_tun.h
_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000


@dataclass(frozen=True)
class LinkProfile:
    """An emulated link: its round trip and its rate, the same both ways."""

    name: str
    rtt_ms: float
    rate_mbit: float


PROFILES = (LinkProfile("40ms-20mbit", 40, 20), LinkProfile("100ms-5mbit", 100, 5))


def open_tun(name: str) -> int:
    """A file descriptor on the TUN device `name` of this process's namespace:
    one IP packet per read and write."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def link_commands() -> list[list[str]]:
    """The namespace, a TUN device on each side, addressed point to point."""
    ns = NAMESPACE
    return [
        ["netns", "add", ns],
        ["tuntap", "add", "dev", ROOT_DEVICE, "mode", "tun"],
        ["addr", "add", ROOT_ADDRESS, "peer", VIEWER_ADDRESS, "dev", ROOT_DEVICE],
        ["link", "set", ROOT_DEVICE, "up"],
        ["-n", ns, "tuntap", "add", "dev", VIEWER_DEVICE, "mode", "tun"],
        ["-n", ns, "addr", "add", VIEWER_ADDRESS, "peer", ROOT_ADDRESS, "dev", VIEWER_DEVICE],
        ["-n", ns, "link", "set", VIEWER_DEVICE, "up"],
        ["-n", ns, "link", "set", "lo", "up"],
    ]


def in_namespace(argv: Sequence[str]) -> list[str]:
    """`argv` run as the viewer, inside the namespace."""
    return ["ip", "netns", "exec", NAMESPACE, *argv]


class Link:
    """The namespace and its devices; `shape` (re)starts the relay for a profile."""

    def __init__(self) -> None:
        self._relay: asyncio.subprocess.Process | None = None

    async def shape(self, profile: LinkProfile) -> None:
        await self.stop()
        # The root device is opened here, in the root namespace; the relay,
        # started inside the viewer's, inherits it and opens the other one there.
        root_fd = open_tun(ROOT_DEVICE)
        try:
            relay = await asyncio.create_subprocess_exec(
                *in_namespace(
                    [
                        sys.executable,
                        "-m",
                        "bench.link_relay",
                        str(root_fd),
                        VIEWER_DEVICE,
                        str(profile.rtt_ms),
                        str(profile.rate_mbit),
                    ]
                ),
                pass_fds=[root_fd],
                stdout=asyncio.subprocess.PIPE,
            )
        finally:
            os.close(root_fd)
        assert relay.stdout is not None
        line = await asyncio.wait_for(relay.stdout.readline(), 10)
        if line.strip() != b"ready":
            relay.kill()
            await relay.wait()
            raise RuntimeError(f"the link relay did not start: {line!r}")
        self._relay = relay

    async def stop(self) -> None:
        relay, self._relay = self._relay, None
        if relay is not None and relay.returncode is None:
            relay.terminate()
            try:
                await asyncio.wait_for(relay.wait(), 5)
            except TimeoutError:
                relay.kill()
                await relay.wait()


@contextlib.asynccontextmanager
async def viewer_link() -> AsyncIterator[Link]:
    """The viewer's namespace, made (after removing a killed run's) and removed."""
    require_privileges()
    await remove([NAMESPACE], [ROOT_DEVICE])
    link = Link()
    try:
        for command in link_commands():
            await ip(*command)
        yield link
    finally:
        await link.stop()
        await remove([NAMESPACE], [ROOT_DEVICE])
