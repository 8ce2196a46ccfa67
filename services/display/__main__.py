"""`python -m services.display`: the display service of one worker host."""

from __future__ import annotations

import os

from services.display.server import start_display_host
from services.display.settings import DisplaySettings
from services.runtime.entrypoint import run_service
from services.runtime.logs import configure_logging
from services.runtime.settings import Env
from services.runtime.telemetry import configure_telemetry


async def main() -> None:
    settings = DisplaySettings.from_env(Env(os.environ))
    configure_logging(settings.log_level)
    configure_telemetry("baton-display", settings.traces_exporter)
    host = await start_display_host(settings, f"{settings.listen_host}:{settings.port}")
    await host.serve_until_signal()


if __name__ == "__main__":
    run_service(main)
