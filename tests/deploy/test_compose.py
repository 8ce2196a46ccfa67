"""deploy/compose.yaml and its podman override agree with what the services read
and with deploy/compose_network.py (offline, in make test; make image-test runs
them for real)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from deploy import compose_network
from services.runtime.settings import Env
from tests.deploy.test_k8s_manifests import SETTINGS, RecordingEnviron

ROOT = Path(__file__).resolve().parents[2]
SUBSTITUTION = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


class Podman(yaml.SafeLoader):
    """compose's !reset tag (podman-compose and Docker Compose both read it)."""


Podman.add_constructor("!reset", lambda loader, node: "!reset")


def load(name: str) -> dict[str, Any]:
    text = (ROOT / "deploy" / name).read_text()
    # What compose does with ${VAR:-default} when VAR is unset.
    text = SUBSTITUTION.sub(lambda m: m.group(2) or "", text)
    loaded: dict[str, Any] = yaml.load(text, Podman)  # a SafeLoader
    return loaded


def baton_services(compose: dict[str, Any]) -> dict[str, tuple[str, dict[str, str]]]:
    """Service -> (module its command runs, its environment)."""
    found = {}
    for name, service in compose["services"].items():
        command = service.get("command", [])
        if command[:2] == ["/opt/baton/.venv/bin/python", "-m"]:
            env = {key: str(value) for key, value in service.get("environment", {}).items()}
            found[name] = (command[2], env)
    return found


def address(compose: dict[str, Any], service: str) -> str:
    value: str = compose["services"][service]["networks"]["baton"]["ipv4_address"]
    return value


def test_every_variable_is_one_a_service_reads() -> None:
    compose = load("compose.yaml")
    services = baton_services(compose)
    modules = sorted(module for module, _ in services.values())
    assert modules == sorted(
        ["services.display"] * 2
        + ["services.automation"] * 2
        + ["services.session"] * 2
        + ["services.edge"] * 2
    )
    for name, (module, env) in services.items():
        environ = RecordingEnviron(env)
        SETTINGS[module](Env(environ))
        unread = {key for key in env if key.startswith("BATON_")} - environ.read
        assert not unread, f"{name}: no settings class reads {sorted(unread)}"


def test_the_addresses_are_the_ones_each_service_listens_on() -> None:
    compose = load("compose.yaml")
    services = compose["services"]
    etcd = f"{address(compose, 'etcd')}:2379"
    assert f"--advertise-client-urls=http://{etcd}" in services["etcd"]["command"]
    sessions = [f"{address(compose, f'session-{i}')}:50051" for i in (1, 2)]
    for host in ("w1", "w2"):
        display = services[f"{host}-display"]
        env, own = display["environment"], address(compose, f"{host}-display")
        assert env["BATON_HOST_ID"] == host
        assert env["BATON_ETCD_ENDPOINTS"] == etcd
        assert env["BATON_DISPLAY_ADVERTISE_ADDRESS"] == f"{own}:{env['BATON_DISPLAY_PORT']}"
        assert env["BATON_STREAM_ADVERTISE_HOST"] == own
        automation = services[f"{host}-automation"]
        port = automation["environment"]["BATON_AUTOMATION_PORT"]
        assert env["BATON_AUTOMATION_ADVERTISE_ADDRESS"] == f"{own}:{port}"
        # One network namespace and one /tmp per worker host, like the pod.
        assert automation["network_mode"] == f"service:{host}-display"
        assert automation["volumes"] == display["volumes"] == [f"{host}-tmp:/tmp"]
        assert "seccomp=unconfined" in automation["security_opt"]
    for i in (1, 2):
        assert services[f"session-{i}"]["environment"]["BATON_ETCD_ENDPOINTS"] == etcd
        own, other = sessions[i - 1], sessions[2 - i]
        edge = services[f"edge-{i}"]["environment"]
        assert edge["BATON_SESSION_ADDRESS"] == f"ipv4:{own},{other}"


def test_start_order_is_health_gated() -> None:
    services = load("compose.yaml")["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}).values():
            assert dependency == {"condition": "service_healthy"}, name
    assert set(services["edge-1"]["depends_on"]) == {"session-1", "session-2"}
    assert set(services["w1-display"]["depends_on"]) == {"etcd"}
    assert "healthcheck" in services["etcd"]
    assert services["otel-collector"]["profiles"] == ["otel"]


def test_the_podman_override_puts_each_service_in_its_namespace() -> None:
    compose = load("compose.yaml")
    override = load("compose.podman.yaml")["services"]
    networked = {n for n, s in compose["services"].items() if "networks" in s} - {"otel-collector"}
    assert set(override) == networked == set(compose_network.ADDRESSES)
    for name, service in override.items():
        assert service["networks"] == "!reset"
        assert service["network_mode"] == f"ns:/run/netns/{compose_network.namespace_of(name)}"
        assert compose_network.address_of(name) == address(compose, name)
    assert compose["networks"]["baton"]["ipam"]["config"] == [{"subnet": compose_network.SUBNET}]


def test_the_network_plan_stays_clear_of_make_cluster_s() -> None:
    plan = compose_network.plan()
    assert plan.bridge == "baton-br-cp" and plan.gateway == "10.201.0.1"
    veths = [host.veth for host in plan.hosts]
    assert len(set(veths)) == len(veths) and all(len(v) <= 15 for v in veths)
    assert not any(host.namespace.startswith("baton-cluster-") for host in plan.hosts)
