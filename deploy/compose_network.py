"""The network deploy/compose.yaml runs on under podman on our build machines.

podman here has no working container network of its own, so compose.podman.yaml
puts each compose service into a network namespace made beforehand
(`network_mode: ns:/run/netns/<name>`), with the address compose.yaml gives it
on the `baton` network (10.201.0.0/24): one namespace per service, joined to a
bridge whose gateway (10.201.0.1) is the host's own way in, as `make cluster`
does it (deploy/netns.py builds the `ip` commands). A worker host's automation
container joins its display's namespace (`network_mode: service:...`).

    python -m deploy.compose_network up     # before podman-compose up
    python -m deploy.compose_network down   # after podman-compose down

Names of its own (`baton-compose-*` namespaces, `baton-cp-*` veths, the
`baton-br-cp` bridge), so it never meets `make cluster`'s.
"""

from __future__ import annotations

import ipaddress
import sys

from deploy import netns
from deploy.netns import HostNetwork, NetworkPlan
from services.runtime.entrypoint import run_service

NAMESPACE_PREFIX = "baton-compose-"
VETH_PREFIX = "baton-cp-"
BRIDGE = "baton-br-cp"
SUBNET = "10.201.0.0/24"

# compose.yaml's service -> its address on the `baton` network (the last
# octet) and a short name for its veth (interface names have 15 bytes at most).
ADDRESSES = {
    "etcd": (2, "etcd"),
    "w1-display": (11, "w1"),
    "w2-display": (12, "w2"),
    "session-1": (21, "s1"),
    "session-2": (22, "s2"),
    "edge-1": (31, "e1"),
    "edge-2": (32, "e2"),
}


def namespace_of(service: str) -> str:
    return f"{NAMESPACE_PREFIX}{service}"


def plan() -> NetworkPlan:
    network = ipaddress.ip_network(SUBNET)
    hosts = tuple(
        HostNetwork(
            host_id=service,
            namespace=namespace_of(service),
            veth=f"{VETH_PREFIX}{short}",
            address=str(network[last]),
        )
        for service, (last, short) in ADDRESSES.items()
    )
    return NetworkPlan(BRIDGE, str(network[1]), network.prefixlen, hosts)


def gateway() -> str:
    return plan().gateway


def address_of(service: str) -> str:
    return next(host.address for host in plan().hosts if host.host_id == service)


async def leftovers() -> tuple[list[str], list[str]]:
    """This network's namespaces and links that exist now."""
    namespaces = [
        line.split()[0]
        for line in (await netns.ip("netns", "list")).splitlines()
        if line.strip() and line.split()[0].startswith(NAMESPACE_PREFIX)
    ]
    links = [
        line.split()[0].split("@")[0]
        for line in (await netns.ip("-br", "link")).splitlines()
        if line.strip() and line.split()[0].split("@")[0] in (BRIDGE, *_veths())
    ]
    return namespaces, links


def _veths() -> list[str]:
    return [host.veth for host in plan().hosts]


async def up() -> None:
    """Make the bridge and every namespace (what an earlier run left goes first)."""
    await down()
    network = netns.Network(plan())
    try:
        await network.create()
    except BaseException:
        await network.destroy()
        raise


async def down() -> None:
    """Remove the namespaces (killing what runs in them), veths and bridge; idempotent."""
    namespaces, links = await leftovers()
    await netns.remove(namespaces, links)


async def run(command: str) -> None:
    netns.require_privileges()
    await (up() if command == "up" else down())


if __name__ == "__main__":
    if sys.argv[1:] not in (["up"], ["down"]):
        print("usage: python -m deploy.compose_network up|down", file=sys.stderr)
        raise SystemExit(2)
    run_service(lambda: run(sys.argv[1]))
