"""Settings from the environment, viewport bounds, and the programs' argv."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.display.display_argv import websockify_argv, x11vnc_argv, xvfb_argv, xvnc_argv
from services.display.registration import first_record, with_capacity
from services.display.settings import Backend, DisplaySettings, NumberRange
from services.display.slot import Viewport, checked_viewport
from services.display.slot_allocator import Capacity, first_free
from services.runtime.errors import InvalidArgument, ResourceExhausted
from services.runtime.settings import ConfigError, Env
from tests.conftest import INTERNAL_TOKEN


def test_defaults() -> None:
    settings = DisplaySettings.from_env(
        Env({"BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value, "BATON_HOST_ID": "worker-1"})
    )
    assert settings.port == 50052
    assert settings.backend is Backend.XVNC
    assert (settings.default_width, settings.default_height) == (1280, 720)
    assert settings.host_id == "worker-1"
    assert settings.listen_host == "127.0.0.1"
    assert settings.state_dir == Path("/tmp/baton-display-50052")


def test_everything_can_be_set() -> None:
    settings = DisplaySettings.from_env(
        Env(
            {
                "BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value,
                "BATON_DISPLAY_PORT": "6000",
                "BATON_DISPLAY_BACKEND": "xvfb-x11vnc",
                "BATON_MAX_SLOTS": "4",
                "BATON_WARM_SLOTS": "2",
                "BATON_DISPLAY_DEFAULT_SIZE": "1920x1080",
                "BATON_DISPLAY_NUMBERS": "200-209",
                "BATON_VNC_PORTS": "17000-17009",
                "BATON_WEBSOCKIFY_PORT": "6081",
                "XDG_RUNTIME_DIR": "/run/user/1000",
            }
        )
    )
    assert settings.backend is Backend.XVFB_X11VNC
    assert (settings.max_slots, settings.warm_slots) == (4, 2)
    assert (settings.default_width, settings.default_height) == (1920, 1080)
    assert settings.displays == NumberRange(200, 209)
    assert list(settings.vnc_ports)[-1] == 17009
    assert settings.websockify_port == 6081
    assert settings.state_dir == Path("/run/user/1000/baton-display-6000")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BATON_DISPLAY_BACKEND", "vnc", "expected one of xvnc, xvfb-x11vnc"),
        ("BATON_DISPLAY_DEFAULT_SIZE", "big", "not a size"),
        ("BATON_DISPLAY_NUMBERS", "1-x", "not a range"),
        ("BATON_WARM_SLOTS", "99", "between 0 and BATON_MAX_SLOTS"),
        ("BATON_DISPLAY_NUMBERS", "100-101", "fewer displays"),
    ],
)
def test_bad_settings_are_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DisplaySettings.from_env(Env({"BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value, name: value}))


def test_viewport_bounds() -> None:
    assert checked_viewport(640, 480) == Viewport(640, 480)
    assert checked_viewport(3840, 2160) == Viewport(3840, 2160)
    for width, height in [(639, 480), (640, 479), (3841, 2160), (3840, 2161), (0, 0)]:
        with pytest.raises(InvalidArgument, match="out of range"):
            checked_viewport(width, height)


def test_xvnc_listens_on_loopback_with_the_slot_password_and_cookie_only() -> None:
    argv = xvnc_argv(
        "/usr/bin/Xvnc", 201, Viewport(1024, 768), 17201, Path("/s/vnc.passwd"), Path("/s/xa")
    )
    assert argv[:2] == ["/usr/bin/Xvnc", ":201"]
    joined = " ".join(argv)
    assert "-geometry 1024x768" in joined
    assert "-rfbport 17201" in joined
    assert "-interface 127.0.0.1" in joined
    assert "-localhost" in argv
    assert "-SecurityTypes VncAuth -PasswordFile /s/vnc.passwd" in joined
    assert "-auth /s/xa" in joined
    # All viewers share 127.0.0.1: never blacklisted (issue 12, finding 6).
    assert "-BlacklistTimeout 0" in joined
    assert "None" not in argv
    assert "-nolisten tcp" in joined


def test_xvfb_and_x11vnc() -> None:
    assert xvfb_argv("Xvfb", 7, Viewport(800, 600), Path("/s/xa")) == [
        "Xvfb",
        ":7",
        "-auth",
        "/s/xa",
        "-screen",
        "0",
        "800x600x24",
        "-nolisten",
        "tcp",
    ]
    argv = x11vnc_argv("x11vnc", 7, 5907, Path("/s/vnc.passwd"), Path("/s/xa"))
    assert " ".join(argv).startswith(
        "x11vnc -display :7 -auth /s/xa -rfbauth /s/vnc.passwd -rfbport 5907"
    )
    assert {"-localhost", "-noipv6", "-shared", "-forever"} <= set(argv)
    assert "-nopw" not in argv


def test_websockify_routes_by_token_file_on_loopback() -> None:
    argv = websockify_argv("/venv/bin/python", 6080, Path("/state/tokens"))
    assert argv[:3] == ["/venv/bin/python", "-m", "websockify"]
    assert argv[-1] == "127.0.0.1:6080"
    assert "TokenFileName" in argv
    assert "/state/tokens" in argv


def test_first_free_skips_ours_and_others() -> None:
    assert first_free(range(10, 15), {10}, lambda n: n == 11) == 12
    assert first_free(range(10, 12), {10}, lambda n: n == 11) is None


def test_capacity_rules() -> None:
    full = Capacity(max_slots=2, held=2, warm=0, warm_ready=0)
    with pytest.raises(ResourceExhausted, match="all 2 slots are in use"):
        full.check_can_hold_one_more()
    assert full.free == 0
    assert full.warm_to_start(2) == 0
    some = Capacity(max_slots=4, held=1, warm=1, warm_ready=1)
    some.check_can_hold_one_more()
    assert some.warm_to_start(2) == 1
    assert some.warm_to_start(5) == 2
    assert not some.must_evict_warm()
    assert Capacity(max_slots=2, held=1, warm=1, warm_ready=0).must_evict_warm()


def test_the_registry_record_from_settings() -> None:
    env = {"BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value, "BATON_HOST_ID": "worker-1"}
    defaults = DisplaySettings.from_env(Env(env))
    # No etcd: no registration, and SIGTERM stops at once.
    assert defaults.etcd_endpoints == ()
    assert (defaults.worker_lease_ttl_s, defaults.drain_timeout_s) == (10, 300.0)
    capacity = Capacity(max_slots=8, held=3, warm=1, warm_ready=1)
    record = first_record(defaults, grpc_port=50052, websockify_port=6080, capacity=capacity)
    assert (record.host_id, record.draining) == ("worker-1", False)
    assert record.display_address == "127.0.0.1:50052"
    assert record.automation_address == "127.0.0.1:50053"
    assert record.stream_address == "127.0.0.1:6080"
    assert (record.max_slots, record.held, record.warm_ready) == (8, 3, 1)
    assert len(record.epoch) == 32
    assert first_record(defaults, 50052, 6080, capacity).epoch != record.epoch

    cluster = DisplaySettings.from_env(
        Env(
            {
                **env,
                "BATON_ETCD_ENDPOINTS": "10.200.0.1:2379, 10.200.0.2:2379",
                "BATON_WORKER_LEASE_TTL_S": "4",
                "BATON_DRAIN_TIMEOUT_S": "30",
                "BATON_DISPLAY_HOST": "0.0.0.0",
                "BATON_DISPLAY_ADVERTISE_ADDRESS": "10.200.0.11:50052",
                "BATON_AUTOMATION_PORT": "6001",
                "BATON_WEBSOCKIFY_HOST": "0.0.0.0",
                "BATON_STREAM_ADVERTISE_HOST": "10.200.0.11",
            }
        )
    )
    assert cluster.etcd_endpoints == ("10.200.0.1:2379", "10.200.0.2:2379")
    assert (cluster.worker_lease_ttl_s, cluster.drain_timeout_s) == (4, 30.0)
    record = first_record(cluster, grpc_port=50052, websockify_port=6080, capacity=capacity)
    assert record.display_address == "10.200.0.11:50052"
    assert record.automation_address == "127.0.0.1:6001"
    assert record.stream_address == "10.200.0.11:6080"
    assert with_capacity(record, Capacity(8, 4, 0, 0)).held == 4
