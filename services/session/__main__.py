"""python -m services.session: run the session service until SIGTERM."""

from __future__ import annotations

import os

from services.runtime.entrypoint import run_service
from services.runtime.grpc_server import serve_until_signal
from services.runtime.logs import configure_logging
from services.runtime.settings import Env
from services.runtime.telemetry import configure_telemetry
from services.session.server import start_session_server
from services.session.settings import SessionSettings


async def main() -> None:
    settings = SessionSettings.from_env(Env(os.environ))
    configure_logging(settings.log_level)
    configure_telemetry("baton-session", settings.traces_exporter)
    running = await start_session_server(settings, f"{settings.bind_host}:{settings.port}")
    await serve_until_signal(running)


if __name__ == "__main__":
    run_service(main)
