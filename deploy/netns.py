"""The network `make cluster` builds: a bridge, one namespace per worker host.

The root namespace gets a Linux bridge with the gateway address (10.200.0.1/24);
each worker host gets a network namespace joined to the bridge by a veth pair,
with its own address (10.200.0.11, .12, ...) and no default route, so what runs
inside reaches the private range only. Everything is made with `ip` (Debian's
iproute2) under names no one else uses (`baton-cluster-<host>` namespaces,
`baton-cl-<host>` veths, the `baton-br0` bridge), so that a later start finds
and removes what a killed launcher left. The commands are built by pure
functions; `Network` runs them.

A worker host's processes also need their own /tmp (network namespaces do not
separate it: X lock files and sockets would collide) and should die together
when the host is killed: `enter_argv` runs them under `unshare` in a private
mount namespace with a tmpfs on /tmp, and a PID namespace whose first process
takes every other one with it when it dies (pid_namespaces(7)).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.runtime.errors import FailedPrecondition, Unavailable
from services.runtime.processes import require_binary

# Names only this launcher uses (other tools may make `baton-...` namespaces of
# their own): what a killed launcher left is found by them and nothing else.
NAMESPACE_PREFIX = "baton-cluster-"
VETH_PREFIX = "baton-cl-"
BRIDGE = "baton-br0"
SUBNET = "10.200.0.0/24"
# The namespace side of every veth pair: each namespace has exactly one.
INNER_INTERFACE = "eth0"
FIRST_HOST_OFFSET = 11

# Mount a private tmpfs on /tmp, then become the host's process. A constant
# script, the argv passed as its positional parameters: nothing is interpolated.
# Its first parameter names a folder under /tmp that must stay visible (Baton's
# own checkout and virtualenv, when they live there), or is empty: the folder is
# opened before the tmpfs hides it and bound back through /proc/self/fd (not
# canonicalized: the path would name the new, empty folder).
PRIVATE_TMP_SCRIPT = (
    'keep="$1"; shift; '
    'if [ -n "$keep" ]; then exec 3<"$keep" || exit 1; fi; '
    "mount -t tmpfs -o mode=1777 tmpfs /tmp || exit 1; "
    'if [ -n "$keep" ]; then '
    'mkdir -p "$keep" && mount --no-canonicalize --bind /proc/self/fd/3 "$keep" || exit 1; '
    "exec 3<&-; fi; "
    'exec "$@"'
)
# Baton's checkout (with its .venv): kept visible when it is under /tmp.
CHECKOUT = Path(__file__).resolve().parents[1]


def kept_under_tmp(path: Path = CHECKOUT) -> str:
    """`path` when the private /tmp would hide it, else ""."""
    return str(path) if path.is_relative_to("/tmp") else ""


# Bits of CapEff in /proc/self/status (capabilities(7)).
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21


@dataclass(frozen=True)
class HostNetwork:
    host_id: str
    namespace: str
    # The veth's root-namespace end (enslaved to the bridge); at most 15 bytes.
    veth: str
    address: str


@dataclass(frozen=True)
class NetworkPlan:
    bridge: str
    gateway: str
    prefix_length: int
    hosts: tuple[HostNetwork, ...]


def plan_network(host_ids: Sequence[str], subnet: str = SUBNET) -> NetworkPlan:
    """The bridge on the subnet's first address, host i on its (11 + i)th."""
    network = ipaddress.ip_network(subnet)
    hosts = tuple(
        HostNetwork(
            host_id=host_id,
            namespace=f"{NAMESPACE_PREFIX}{host_id}",
            veth=f"{VETH_PREFIX}{host_id}",
            address=str(network[FIRST_HOST_OFFSET + index]),
        )
        for index, host_id in enumerate(host_ids)
    )
    for host in hosts:
        if len(host.veth) > 15:
            raise FailedPrecondition(f"host id {host.host_id!r} too long for an interface name")
    return NetworkPlan(BRIDGE, str(network[1]), network.prefixlen, hosts)


def bridge_commands(plan: NetworkPlan) -> list[list[str]]:
    return [
        ["link", "add", "name", plan.bridge, "type", "bridge"],
        ["addr", "add", f"{plan.gateway}/{plan.prefix_length}", "dev", plan.bridge],
        ["link", "set", plan.bridge, "up"],
    ]


def host_commands(plan: NetworkPlan, host: HostNetwork) -> list[list[str]]:
    ns = host.namespace
    return [
        ["netns", "add", ns],
        ["link", "add", host.veth, "type", "veth", "peer", "name", INNER_INTERFACE, "netns", ns],
        ["link", "set", host.veth, "master", plan.bridge, "up"],
        ["-n", ns, "addr", "add", f"{host.address}/{plan.prefix_length}", "dev", INNER_INTERFACE],
        ["-n", ns, "link", "set", "lo", "up"],
        ["-n", ns, "link", "set", INNER_INTERFACE, "up"],
    ]


def enter_argv(namespace: str, argv: Sequence[str]) -> list[str]:
    """`argv` run in `namespace` with a private /tmp, in a PID namespace of its own.

    `setpriv --pdeathsig KILL`: if the launcher itself is killed, the host goes
    too (unshare's --kill-child passes the kill on to the PID namespace).
    """
    return [
        "setpriv",
        "--pdeathsig",
        "KILL",
        "ip",
        "netns",
        "exec",
        namespace,
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "sh",
        "-c",
        PRIVATE_TMP_SCRIPT,
        "sh",
        kept_under_tmp(),
        *argv,
    ]


def baton_namespaces(ip_netns_list: str) -> list[str]:
    """Our namespaces in `ip netns list` output ("name" or "name (id: N)" lines)."""
    names = (line.split()[0] for line in ip_netns_list.splitlines() if line.strip())
    return [name for name in names if name.startswith(NAMESPACE_PREFIX)]


def baton_links(ip_brief_link: str) -> list[str]:
    """Our interfaces in `ip -br link` output ("name@peer  STATE ..." lines)."""
    names = (line.split()[0].split("@")[0] for line in ip_brief_link.splitlines() if line.strip())
    return [name for name in names if name == BRIDGE or name.startswith(VETH_PREFIX)]


def has_capabilities(proc_status: str, *bits: int) -> bool:
    """Whether CapEff in a /proc/<pid>/status text holds every capability in `bits`."""
    for line in proc_status.splitlines():
        if line.startswith("CapEff:"):
            effective = int(line.split()[1], 16)
            return all(effective & (1 << bit) for bit in bits)
    return False


def require_privileges() -> None:
    """Namespaces and mounts need CAP_NET_ADMIN and CAP_SYS_ADMIN (root)."""
    with open("/proc/self/status", encoding="ascii") as status:
        if not has_capabilities(status.read(), CAP_NET_ADMIN, CAP_SYS_ADMIN):
            raise FailedPrecondition(
                "make cluster needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create "
                "network namespaces and a bridge: run it as root or with sudo"
            )
    require_binary("ip", "iproute2")
    require_binary("unshare", "util-linux")
    require_binary("setpriv", "util-linux")


async def ip(*args: str, check: bool = True) -> str:
    """Run `ip args...`; its output, or Unavailable with its error when it fails."""
    process = await asyncio.create_subprocess_exec(
        "ip",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if check and process.returncode != 0:
        raise Unavailable(f"ip {' '.join(args)}: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


async def _kill_namespace_processes(namespace: str) -> int:
    """SIGKILL whatever still runs in `namespace`; how many there were."""
    pids = (await ip("netns", "pids", namespace, check=False)).split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    return len(pids)


async def remove(namespaces: Sequence[str], links: Sequence[str]) -> None:
    """Remove these namespaces (killing what runs in them) and links; idempotent."""
    for namespace in namespaces:
        await _kill_namespace_processes(namespace)
        # The veth pair goes with the namespace holding one end.
        await ip("netns", "delete", namespace, check=False)
    for link in links:
        await ip("link", "delete", link, check=False)


async def leftovers() -> tuple[list[str], list[str]]:
    """Our namespaces and links that exist now (a killed launcher's, at start)."""
    namespaces = baton_namespaces(await ip("netns", "list"))
    links = baton_links(await ip("-br", "link"))
    return namespaces, links


class Network:
    """The bridge and the hosts' namespaces of one plan, made and removed."""

    def __init__(self, plan: NetworkPlan) -> None:
        self.plan = plan

    async def create(self) -> None:
        # On a failure part-way, `destroy` (idempotent) removes what was made.
        for command in bridge_commands(self.plan):
            await ip(*command)
        for host in self.plan.hosts:
            for command in host_commands(self.plan, host):
                await ip(*command)

    async def destroy(self) -> None:
        await remove(
            [host.namespace for host in self.plan.hosts],
            [*(host.veth for host in self.plan.hosts), self.plan.bridge],
        )
