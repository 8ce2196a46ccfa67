"""The cluster launcher's pure parts: the network plan, argv, environments."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy import cluster, netns
from services.display.settings import NumberRange
from services.runtime.errors import FailedPrecondition
from services.runtime.settings import Env


def test_the_plan_puts_the_gateway_first_and_hosts_from_11() -> None:
    plan = netns.plan_network(["w1", "w2"])
    assert (plan.bridge, plan.gateway, plan.prefix_length) == ("baton-br0", "10.200.0.1", 24)
    assert [(h.namespace, h.veth, h.address) for h in plan.hosts] == [
        ("baton-cluster-w1", "baton-cl-w1", "10.200.0.11"),
        ("baton-cluster-w2", "baton-cl-w2", "10.200.0.12"),
    ]


def test_a_host_id_too_long_for_an_interface_name_is_refused() -> None:
    with pytest.raises(FailedPrecondition, match="too long"):
        netns.plan_network(["long-host"])


def test_each_host_gets_a_veth_into_the_bridge_and_no_default_route() -> None:
    plan = netns.plan_network(["w1"])
    commands = netns.host_commands(plan, plan.hosts[0])
    assert ["link", "set", "baton-cl-w1", "master", "baton-br0", "up"] in commands
    assert ["-n", "baton-cluster-w1", "addr", "add", "10.200.0.11/24", "dev", "eth0"] in commands
    # Only the private range is reachable from inside.
    assert not any("route" in command for command in commands)


def test_a_host_process_runs_in_its_namespace_with_a_private_tmp() -> None:
    argv = netns.enter_argv("baton-w1", ["python", "-m", "deploy.worker_host"])
    assert argv[:3] == ["setpriv", "--pdeathsig", "KILL"]
    assert argv[3:7] == ["ip", "netns", "exec", "baton-w1"]
    assert {"--mount", "--pid", "--fork", "--kill-child", "--mount-proc"} <= set(argv)
    assert argv[argv.index("-c") + 1] == netns.PRIVATE_TMP_SCRIPT
    # The argv is passed as positional parameters, never spliced into the script.
    assert argv[-5:] == ["sh", netns.kept_under_tmp(), "python", "-m", "deploy.worker_host"]


def test_a_checkout_under_tmp_stays_visible_in_the_private_tmp() -> None:
    assert netns.kept_under_tmp(Path("/tmp/ci/clone")) == "/tmp/ci/clone"
    assert netns.kept_under_tmp(Path("/work/baton")) == ""


def test_leftovers_are_found_by_name() -> None:
    # Only ours: another tool's baton-net-1 is not a leftover of this launcher.
    listing = "baton-cluster-w1 (id: 0)\nbaton-net-1\nbaton-cluster-w2\n"
    assert netns.baton_namespaces(listing) == ["baton-cluster-w1", "baton-cluster-w2"]
    links = "lo  UNKNOWN 0\nbaton-br0  UP  5\nbaton-cl-w1@if2  UP  5\nbaton-x@if9 UP\n"
    assert netns.baton_links(links) == ["baton-br0", "baton-cl-w1"]


def test_capabilities_are_read_from_cap_eff() -> None:
    both = (1 << netns.CAP_NET_ADMIN) | (1 << netns.CAP_SYS_ADMIN)
    status = f"Name:\tpython\nCapEff:\t{both:016x}\n"
    assert netns.has_capabilities(status, netns.CAP_NET_ADMIN, netns.CAP_SYS_ADMIN)
    net_only = f"CapEff:\t{1 << netns.CAP_NET_ADMIN:016x}\n"
    assert not netns.has_capabilities(net_only, netns.CAP_NET_ADMIN, netns.CAP_SYS_ADMIN)
    assert not netns.has_capabilities("Name:\tx\n", netns.CAP_NET_ADMIN)


def test_display_numbers_and_vnc_ports_are_split_disjoint() -> None:
    assert cluster.split_range(NumberRange(1300, 1309), 2) == [
        NumberRange(1300, 1304),
        NumberRange(1305, 1309),
    ]
    with pytest.raises(FailedPrecondition, match="too small"):
        cluster.split_range(NumberRange(5, 5), 2)


def test_etcd_members_know_each_other_on_the_gateway() -> None:
    members = [cluster.EtcdMember(f"etcd-{i}", 2000 + i, 3000 + i) for i in (1, 2, 3)]
    argv = cluster.etcd_argv("etcd", members[1], members, "10.200.0.1", Path("/d/etcd-2"))
    assert "--listen-client-urls=http://10.200.0.1:2002" in argv
    assert "--listen-peer-urls=http://10.200.0.1:3002" in argv
    assert (
        "--initial-cluster=etcd-1=http://10.200.0.1:3001,"
        "etcd-2=http://10.200.0.1:3002,etcd-3=http://10.200.0.1:3003"
    ) in argv
    assert cluster.etcd_endpoints(members, "10.200.0.1") == (
        "10.200.0.1:2001,10.200.0.1:2002,10.200.0.1:2003"
    )


BASE = {
    "BATON_INTERNAL_TOKEN": "shared",
    "BATON_DISPLAY_ADDRESS": "127.0.0.1:1",
    "BATON_AUTOMATION_ADDRESS": "127.0.0.1:2",
    "BATON_HOST_ID": "from-the-caller",
    "BATON_PROFILE_ROOT": "/somewhere/shared",
}


def test_a_worker_host_advertises_its_own_address_as_the_contract_says() -> None:
    host = netns.plan_network(["w1"]).hosts[0]
    env = cluster.worker_env(BASE, host, "e:1", NumberRange(1, 2), NumberRange(3, 4))
    assert env["BATON_HOST_ID"] == "w1"
    assert env["BATON_ETCD_ENDPOINTS"] == "e:1"
    assert env["BATON_DISPLAY_HOST"] == env["BATON_AUTOMATION_HOST"] == "10.200.0.11"
    assert env["BATON_DISPLAY_ADVERTISE_ADDRESS"] == "10.200.0.11:50052"
    assert env["BATON_AUTOMATION_ADVERTISE_ADDRESS"] == "10.200.0.11:50053"
    assert env["BATON_WEBSOCKIFY_HOST"] == env["BATON_STREAM_ADVERTISE_HOST"] == "10.200.0.11"
    # Automation follows its own host's display, not the caller's.
    assert env["BATON_DISPLAY_ADDRESS"] == "10.200.0.11:50052"
    assert (env["BATON_DISPLAY_NUMBERS"], env["BATON_VNC_PORTS"]) == ("1-2", "3-4")
    assert env["BATON_PROFILE_ROOT"].startswith("/tmp/")
    assert env["BATON_INTERNAL_TOKEN"] == "shared"


def test_a_session_replica_has_etcd_and_no_single_worker_address() -> None:
    env = cluster.session_env(BASE, 5001, "e:1,e:2", Path("/run/x/session-1"))
    assert env["BATON_ETCD_ENDPOINTS"] == "e:1,e:2"
    assert (env["BATON_SESSION_HOST"], env["BATON_SESSION_PORT"]) == ("127.0.0.1", "5001")
    assert env["BATON_SESSION_STATE_DIR"] == "/run/x/session-1"
    assert "BATON_DISPLAY_ADDRESS" not in env and "BATON_AUTOMATION_ADDRESS" not in env
    assert "BATON_HOST_ID" not in env
    assert env["BATON_INTERNAL_TOKEN"] == "shared"


def test_each_edge_prefers_its_own_session_replica_then_the_others() -> None:
    assert cluster.session_target([5001, 5002], 0) == "ipv4:127.0.0.1:5001,127.0.0.1:5002"
    assert cluster.session_target([5001, 5002], 1) == "ipv4:127.0.0.1:5002,127.0.0.1:5001"
    env = cluster.edge_env(BASE, "127.0.0.1", 8081, "ipv4:127.0.0.1:5002")
    assert (env["BATON_EDGE_PORT"], env["BATON_SESSION_ADDRESS"]) == ("8081", "ipv4:127.0.0.1:5002")


def test_settings_honour_the_api_token_and_refuse_bad_edge_ports() -> None:
    settings = cluster.ClusterSettings.from_env(
        Env({"BATON_API_TOKEN": "t0k", "BATON_CLUSTER_EDGE_PORTS": "9001, 9002"})
    )
    assert (settings.api_token, settings.edge_ports) == ("t0k", (9001, 9002))
    assert cluster.ClusterSettings.from_env(Env({})).api_token  # generated when unset
    with pytest.raises(FailedPrecondition, match="BATON_CLUSTER_EDGE_PORTS"):
        cluster.ClusterSettings.from_env(Env({"BATON_CLUSTER_EDGE_PORTS": "80,x"}))
