"""One worker host of `make cluster`: its display and automation services.

The cluster launcher (deploy/cluster.py) runs this inside the host's network,
mount and PID namespaces (deploy/netns.py). It is `make run` cut down to the
worker's half: display, then automation, each listening on the host's own
address (BATON_DISPLAY_HOST, BATON_AUTOMATION_HOST), restarted when one
crashes, both stopped in reverse order on SIGTERM.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from deploy.local_stack import Service, run_stack
from services.runtime.entrypoint import run_service

DISPLAY_PORT = 50052
AUTOMATION_PORT = 50053


def worker_services(env: Mapping[str, str]) -> list[Service]:
    return [
        Service(
            "display",
            "services.display",
            int(env.get("BATON_DISPLAY_PORT", str(DISPLAY_PORT))),
            grpc_host=env.get("BATON_DISPLAY_HOST", "127.0.0.1"),
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
    await run_stack(worker_services(env), env)


if __name__ == "__main__":
    run_service(main)
