"""One `make run` stack (deploy.local_stack) for every test of the docs that needs one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import require_binary
from tests.deploy.stack_process import LauncherStack

# This helper's share of the machine (other stacks use other numbers).
DISPLAYS = "2300-2309"
VNC_PORTS = "22300-22309"
INTERNAL_TOKEN = "internal-token-for-the-readme-commands-0123456789"


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LauncherStack]:
    require_binary("Xvnc", "tigervnc-standalone-server")
    require_binary("chromium", "chromium")
    running = LauncherStack(
        tmp_path_factory.mktemp("readme"),
        DISPLAYS,
        VNC_PORTS,
        BATON_MAX_SLOTS="2",
        BATON_WARM_SLOTS="0",
        BATON_INTERNAL_TOKEN=INTERNAL_TOKEN,
    )
    try:
        running.wait_for_line("all services ready", 90)
        yield running
    finally:
        assert running.stop() == 0
