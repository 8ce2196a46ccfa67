"""`python -m services.automation`: serve AutomationService until SIGTERM."""

from __future__ import annotations

import gc
import os

from services.automation.browser_user import enter_user_namespace
from services.automation.server import start_automation_server
from services.automation.settings import AutomationSettings
from services.runtime.entrypoint import run_service
from services.runtime.grpc_server import serve_until_signal
from services.runtime.logs import configure_logging
from services.runtime.settings import Env
from services.runtime.telemetry import configure_telemetry


async def main() -> None:
    settings = AutomationSettings.from_env(Env(os.environ))
    configure_logging(settings.log_level)
    configure_telemetry("baton-automation", settings.traces_exporter)
    running = await start_automation_server(settings, f"{settings.listen_host}:{settings.port}")
    # Start-up's objects live as long as the process: out of the cycle collector's
    # way, a full collection costs only what sessions left (README "Memory").
    gc.collect()
    gc.freeze()
    await serve_until_signal(running)


if __name__ == "__main__":
    # Before anything starts: the process is replaced (README.md, "Isolation").
    enter_user_namespace(AutomationSettings.from_env(Env(os.environ)).browser_uid_base)
    run_service(main)
