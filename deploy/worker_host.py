"""One worker host of `make cluster`: its display and automation services.

The cluster launcher (deploy/cluster.py) runs this inside the host's network,
mount and PID namespaces (deploy/netns.py). It is `make run` cut down to the
worker's half: display, then automation, each listening on the host's own
address (BATON_DISPLAY_HOST, BATON_AUTOMATION_HOST), restarted when one
crashes. SIGTERM drains the host: the display service first (it stops placing
and lets its live slots go on, up to BATON_DRAIN_TIMEOUT_S: services/display/
README.md, "Drain"), the automation service only after it, since those live
sessions' browsers run there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from deploy.local_stack import STOP_GRACE_S, Service, run_stack
from services.display.settings import DisplaySettings
from services.runtime.entrypoint import run_service
from services.runtime.settings import Env

DISPLAY_PORT = 50052
AUTOMATION_PORT = 50053


def worker_services(env: Mapping[str, str], drain_timeout_s: float) -> list[Service]:
    """Display, then automation. The display's stop waits out its drain."""
    return [
        Service(
            "display",
            "services.display",
            int(env.get("BATON_DISPLAY_PORT", str(DISPLAY_PORT))),
            grpc_host=env.get("BATON_DISPLAY_HOST", "127.0.0.1"),
            stop_grace_s=drain_timeout_s + STOP_GRACE_S,
        ),
        Service(
            "automation",
            "services.automation",
            int(env.get("BATON_AUTOMATION_PORT", str(AUTOMATION_PORT))),
            grpc_host=env.get("BATON_AUTOMATION_HOST", "127.0.0.1"),
        ),
    ]


async def main() -> None:
    env = dict(os.environ)
    drain_timeout_s = Env(env).number(
        "BATON_DRAIN_TIMEOUT_S", DisplaySettings.drain_timeout_s, minimum=0.0
    )
    await run_stack(worker_services(env, drain_timeout_s), env, stop_in_start_order=True)


if __name__ == "__main__":
    run_service(main)
