"""Every `BATON_*` variable a service's settings read is documented in docs/settings.md.

Found two ways: grepping the settings modules (and the runtime modules their
`from_env` calls) for the names they spell out, and building each service's settings
from an environment that records every name looked up (with the optional parts, etcd
and webhooks, switched on so their variables are read too)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from services.automation.settings import AutomationSettings
from services.display.settings import DisplaySettings
from services.edge.settings import EdgeSettings
from services.runtime.settings import Env
from services.session.settings import SessionSettings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_MODULES = [
    *sorted(ROOT.glob("services/*/settings.py")),
    ROOT / "services/runtime/grpc_tls.py",
    ROOT / "services/runtime/internal_auth.py",
]
NAME = re.compile(r"[\"'](BATON_[A-Z0-9_]*[A-Z0-9])[\"']")


class RecordingEnviron(dict[str, str]):
    """An environment that remembers every variable looked up in it."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)


def names_read_at_start() -> set[str]:
    read: set[str] = set()
    for settings in (EdgeSettings, SessionSettings, DisplaySettings, AutomationSettings):
        environ = RecordingEnviron(
            {
                "BATON_INTERNAL_TOKEN": "t" * 40,
                "BATON_ETCD_ENDPOINTS": "127.0.0.1:2379",
                "BATON_WEBHOOK_URL": "http://127.0.0.1:9/hook",
                "BATON_WEBHOOK_SECRET": "s" * 20,
                "BATON_RECORDING_S3_BUCKET": "recordings",
            }
        )
        settings.from_env(Env(environ))
        read |= environ.read
    return {name for name in read if name.startswith("BATON_")}


def names_in_settings_modules() -> set[str]:
    return {name for module in SETTINGS_MODULES for name in NAME.findall(module.read_text())}


def documented() -> set[str]:
    text = (ROOT / "docs" / "settings.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| `")]
    return {name for line in table for name in re.findall(r"`(BATON_[A-Z0-9_]+)`", line)}


def test_every_setting_a_service_reads_is_documented() -> None:
    read = names_read_at_start() | names_in_settings_modules()
    # The positive markers: both ways found names, optional parts included.
    assert {"BATON_EDGE_PORT", "BATON_WEBHOOK_MAX_ATTEMPTS", "BATON_GRPC_TLS_CA"} <= read
    missing = sorted(read - documented())
    assert not missing, f"not in docs/settings.md's table: {missing}"


def test_the_table_documents_no_setting_that_nothing_reads() -> None:
    read = names_read_at_start() | names_in_settings_modules()
    # Read by the launchers (deploy/), not by a service's settings.
    launcher = {"BATON_RUN_AS"}
    stale = sorted(documented() - read - launcher)
    assert not stale, f"docs/settings.md documents settings nothing reads: {stale}"
