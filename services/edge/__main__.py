"""python -m services.edge: serve the edge until SIGTERM or SIGINT."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys

from services.edge.auth import Authenticator, console_url, generate_api_token
from services.edge.server import start_edge_server
from services.edge.settings import EdgeSettings
from services.runtime.entrypoint import run_service, until_stop_signal
from services.runtime.logs import configure_logging
from services.runtime.settings import Env
from services.runtime.telemetry import configure_telemetry

log = logging.getLogger("services.edge")


async def main() -> None:
    settings = EdgeSettings.from_env(Env(os.environ))
    configure_logging(settings.log_level)
    configure_telemetry("baton-edge", settings.traces_exporter)
    if not settings.api_token:
        # As Jupyter does: a fresh token, shown once with the console URL.
        settings = dataclasses.replace(settings, api_token=generate_api_token())
    if not settings.client_bundle_dir.is_dir():
        log.warning("clients/js is not built (%s): run `make setup`", settings.client_bundle_dir)
    auth = Authenticator(
        settings.api_token, settings.jwt_secret, jwt_max_lifetime_s=settings.jwt_max_lifetime_s
    )
    running = await start_edge_server(settings, auth)
    url = console_url(settings.public_url or running.base_url, settings.api_token)
    print(f"Baton console: {url}", file=sys.stderr, flush=True)
    try:
        await until_stop_signal()
        log.info("shutting down")
    finally:
        await running.stop()


if __name__ == "__main__":
    run_service(main)
