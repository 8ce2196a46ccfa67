"""One cluster (`make cluster`'s launcher, for real) for every test of this package.

Started once, stopped after the package's last test (package scope), so that
tests/deploy/test_cluster_launcher.py can start its own afterwards: only one
cluster runs per machine. Each test leaves it as it found it: its sessions
ended, every worker host up and idle (tests that stop a host start it again
with `RunningCluster.restart_down_workers`). Etcd members are not restarted:
the etcd test runs last in its module.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy import netns
from tests.cluster.launcher import (
    READY,
    Launcher,
    RunningCluster,
    launcher_env,
    remove_leftovers,
)
from tests.conftest import INTERNAL_TOKEN, free_port, require_binary, searchable
from tests.edge.harness import JWT_SECRET, OPERATOR_TOKEN

# Short enough for the drain test, long enough for what it checks meanwhile.
DRAIN_TIMEOUT_S = 20
LEASE_TTL_S = 10
SLOTS_PER_HOST = 3


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    require_binary("ip", "iproute2")
    require_binary("etcd", "etcd-server")
    require_binary("Xvnc", "tigervnc-standalone-server")
    require_binary("chromium", "chromium")
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert netns.baton_namespaces(listing) == [], "another cluster is running on this machine"
    run_dir: Path = tmp_path_factory.mktemp("cluster") / "run"
    # Its services run as user baton (deploy/service_user.py), who must get through.
    searchable(run_dir.parent)
    env = {
        **launcher_env(run_dir, [free_port(), free_port()], OPERATOR_TOKEN),
        "BATON_MAX_SLOTS": str(SLOTS_PER_HOST),
        "BATON_DRAIN_TIMEOUT_S": str(DRAIN_TIMEOUT_S),
        "BATON_WORKER_LEASE_TTL_S": str(LEASE_TTL_S),
        "BATON_JWT_SECRET": JWT_SECRET,
        # The tests ask the session replicas where sessions were placed.
        "BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value,
    }
    launcher = Launcher(env)
    try:
        launcher.wait_for(READY, timeout=90)
        yield RunningCluster(launcher)
        launcher.process.send_signal(signal.SIGTERM)
        assert launcher.process.wait(timeout=60) == 0, "\n".join(launcher.errors[-40:])
    finally:
        launcher.close()
        # Whatever a failed run left must not break the next test.
        remove_leftovers()
