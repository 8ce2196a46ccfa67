"""The stream endpoint's settings, argv and URLs (README.md, "Network"); no processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.display.display_argv import websockify_argv
from services.display.settings import DisplaySettings
from services.display.state_dir import StateDir
from services.display.websockify_router import StreamEndpoint, WebsockifyRouter
from services.runtime.settings import ConfigError, Env
from tests.conftest import INTERNAL_TOKEN
from tests.tls_certs import TestCa

BASE = {"BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value}


def router(endpoint: StreamEndpoint) -> WebsockifyRouter:
    return WebsockifyRouter(StateDir(Path("/nonexistent")), 6080, 1.0, 1.0, endpoint)


def test_by_default_the_endpoint_is_loopback_plaintext() -> None:
    settings = DisplaySettings.from_env(Env(BASE))
    assert settings.websockify_host == "127.0.0.1"
    assert settings.stream_advertise_host == "127.0.0.1"
    assert settings.stream_tls_cert is None
    assert router(StreamEndpoint()).url_for("t0k") == "ws://127.0.0.1:6080/websockify?token=t0k"


def test_the_url_names_the_advertised_host_and_wss_with_tls(tmp_path: Path) -> None:
    pair = TestCa(tmp_path).issue("worker", ("10.201.0.2",))
    settings = DisplaySettings.from_env(
        Env(
            BASE
            | {
                "BATON_WEBSOCKIFY_HOST": "0.0.0.0",
                "BATON_STREAM_ADVERTISE_HOST": "worker-1.internal",
                "BATON_STREAM_TLS_CERT": str(pair.cert),
                "BATON_STREAM_TLS_KEY": str(pair.key),
            }
        )
    )
    endpoint = StreamEndpoint(
        settings.websockify_host,
        settings.stream_advertise_host,
        settings.stream_tls_cert,
        settings.stream_tls_key,
    )
    slots = router(endpoint)
    assert slots.url_for("t0k") == "wss://worker-1.internal:6080/websockify?token=t0k"
    # The host probes its own websockify on loopback when it listens everywhere.
    assert slots.local_url_for("t0k") == "wss://127.0.0.1:6080/websockify?token=t0k"
    assert endpoint.probe_ssl() is not None
    assert (
        router(StreamEndpoint("::", "fd00::7")).url_for("x")
        == "ws://[fd00::7]:6080/websockify?token=x"
    )
    # Listening on one address without an advertised host: that address.
    only = DisplaySettings.from_env(Env(BASE | {"BATON_WEBSOCKIFY_HOST": "10.201.0.2"}))
    assert only.stream_advertise_host == "10.201.0.2"


def test_stream_settings_refuse_what_cannot_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BATON_STREAM_ADVERTISE_HOST"):
        DisplaySettings.from_env(Env(BASE | {"BATON_WEBSOCKIFY_HOST": "0.0.0.0"}))
    with pytest.raises(ConfigError, match="BATON_STREAM_TLS_KEY"):
        DisplaySettings.from_env(Env(BASE | {"BATON_STREAM_TLS_CERT": str(tmp_path / "c")}))
    with pytest.raises(ConfigError, match="cannot read"):
        DisplaySettings.from_env(
            Env(
                BASE
                | {
                    "BATON_STREAM_TLS_CERT": str(tmp_path / "c.pem"),
                    "BATON_STREAM_TLS_KEY": str(tmp_path / "k.pem"),
                }
            )
        )


def test_websockify_argv_listens_where_told_and_with_tls_only() -> None:
    plain = websockify_argv("/py", 6080, Path("/state/tokens"), "10.201.0.2")
    assert plain[-1] == "10.201.0.2:6080"
    assert "--ssl-only" not in plain
    tls = websockify_argv("/py", 6080, Path("/t"), "10.201.0.2", "/c.pem", "/k.pem")
    assert tls[-1] == "10.201.0.2:6080"
    assert tls[tls.index("--cert") + 1] == "/c.pem"
    assert tls[tls.index("--key") + 1] == "/k.pem"
    assert "--ssl-only" in tls
