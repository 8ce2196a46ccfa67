"""The bench's pure parts: process classification, memory arithmetic, env, table."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from bench.__main__ import TARGETS_HEADING, lookup, table
from bench.audience import per_added, summarise
from bench.bare import bare_chromium_argv, websockify_argv
from bench.control_plane import etcd_argv
from bench.density import compare, knee, marginal, per_session
from bench.key_page import square_centre
from bench.plan import TARGETS
from bench.proc_stats import baton_part, category, cpu_percent
from bench.stack import StackConfig, stack_env
from bench.stats import percentile, ratio, summary_ms
from bench.watchers import novnc_encodings, set_encodings, set_pixel_format


def test_processes_are_sorted_into_the_parts_of_a_session() -> None:
    assert category("Xvnc", ["/usr/bin/Xvnc", ":500"]) == "x_vnc"
    assert category("x11vnc", ["x11vnc", "-display", ":501"]) == "x_vnc"
    assert category("Xvfb", ["/usr/bin/Xvfb", ":502"]) == "x_vnc"
    websockify = ["/work/.venv/bin/python3", "-m", "websockify", "127.0.0.1:1"]
    assert category("python3", websockify) == "websockify"
    assert category("chromium", ["/usr/lib/chromium/chromium", "--type=renderer"]) == "chromium"
    assert category("chrome_crashpad", ["/usr/lib/chromium/chrome_crashpad_handler"]) == "chromium"
    assert category("python3", ["python3", "-m", "services.edge"]) == "baton"
    assert category("node", ["/x/playwright/driver/node", "cli.js", "run-driver"]) == "baton"


def test_memory_per_session_and_what_each_added_session_costs() -> None:
    shares = per_session({"chromium": 400.0, "x_vnc": 60.0, "websockify": 20.0, "baton": 120.0}, 2)
    assert shares == {
        "chromium": 200.0,
        "x_vnc": 30.0,
        "websockify": 10.0,
        "baton": 60.0,
        "total": 300.0,
        "without_baton": 240.0,
    }
    # 1 session: 500 MiB in all; 5 sessions: 1300 MiB in all: 200 MiB each added.
    memory = {"1": {"total": 500.0}, "5": {"total": 260.0}}
    assert marginal(memory, 1, 5) == 200.0
    assert marginal(memory, 1, 1) is None
    assert marginal(memory, 1, 9) is None


def test_baton_is_compared_with_bare_at_the_same_session_count() -> None:
    baton = {"pss_mib_per_session": {"1": {"total": 600.0}, "2": {"total": 330.0}}}
    bare = {"sessions": 2, "pss_mib_per_session": {"1": {"total": 250.0}, "2": {"total": 220.0}}}
    versus = compare(baton, bare)
    assert versus["at_sessions"] == 2
    assert versus["ratio"] == 1.5
    assert versus["ratio_by_sessions"] == {"1": 2.4, "2": 1.5}
    assert versus["baton_marginal_mib"] == 60.0
    assert versus["bare_marginal_mib"] == 190.0


def test_cpu_percent_counts_only_processes_seen_twice() -> None:
    assert cpu_percent({1: 1.0, 2: 5.0}, {1: 1.5, 3: 9.0}, 2.0) == 25.0


def test_percentiles_and_summaries() -> None:
    samples = [i / 1000 for i in range(1, 101)]
    assert percentile(samples, 0.5) == 0.051
    summary = summary_ms(samples)
    assert summary["n"] == 100
    assert summary["p99"] == 99.0
    assert summary_ms([]) == {"n": 0}
    assert ratio(11.0, 10.0) == 1.1
    assert ratio(None, 10.0) is None
    assert ratio(1.0, 0.0) is None


def test_the_square_is_sampled_inside_the_page_far_from_the_top_left() -> None:
    assert square_centre(1280, 720) == (1192, 632)


def test_stack_env_uses_the_bench_ranges_and_drops_inherited_baton_settings() -> None:
    ports = {"edge": 1, "session": 2, "display": 3, "automation": 4}
    env = stack_env(
        StackConfig(backend="xvfb-x11vnc", warm_slots=2),
        ports,
        Path("/w"),
        {"PATH": "/bin", "BATON_ETCD_ENDPOINTS": "x:1"},
    )
    assert env["PATH"] == "/bin"
    assert "BATON_ETCD_ENDPOINTS" not in env
    assert env["BATON_DISPLAY_NUMBERS"] == "500-549"
    assert env["BATON_VNC_PORTS"] == "18500-18549"
    assert env["BATON_DISPLAY_BACKEND"] == "xvfb-x11vnc"
    assert env["BATON_WARM_SLOTS"] == "2"
    assert env["BATON_EDGE_PORT"] == "1"


def test_the_table_shows_each_target_and_whether_it_was_met() -> None:
    results = {"handoff": {"take_control_to_first_key": {"p50": 40.0, "p99": 120.0}}}
    assert lookup(results, ("handoff", "take_control_to_first_key", "p99")) == 120.0
    assert lookup(results, ("density", "baton", "sessions")) is None
    lines = table(results)
    take = next(line for line in lines if "take_control p99" in line)
    assert "120.00ms" in take and take.endswith("NO")
    targets = lines[lines.index(TARGETS_HEADING) + 1 :]
    assert len(targets) == len(TARGETS)
    assert len([line for line in targets if line.endswith(" -")]) == len(TARGETS) - 1


def test_the_second_rounds_figures_are_shown_beside_their_targets() -> None:
    figures = {"p50": 16.0, "p90": 20.0, "p99": 30.0}
    results = {
        "real_viewer": {
            "novnc-default": {
                "edge": figures,
                "bare": figures,
                "ratio_p50": 1.02,
                "ratio_p99": 1.2,
            }
        },
        "viewer_join": {"novnc": {"edge": {"p50": 40.0, "p99": 60.0}, "bare": figures}},
        "session_start": {"cold_vs_bare_p50": 1.3},
    }
    lines = table(results)
    assert any(line.startswith("2.1") and "noVNC novnc-default edge p50" in line for line in lines)
    assert any("viewer join, novnc, edge p50" in line and "40.00ms" in line for line in lines)
    targets = lines[lines.index(TARGETS_HEADING) + 1 :]
    verdicts = {line[7:51].strip(): line.rsplit(" ", 1)[-1] for line in targets}
    assert verdicts["noVNC edge/bare p50, novnc-default"] == "yes"
    assert verdicts["noVNC edge/bare p99, novnc-default"] == "NO"
    assert verdicts["noVNC edge/bare p50, low"] == "-"
    assert verdicts["noVNC join, GET stream to first frame, p50"] == "yes"
    assert verdicts["cold start / bare cold start, p50"] == "NO"


def test_bare_argvs_route_by_address_or_by_token_directory() -> None:
    direct = websockify_argv(6080, "127.0.0.1:18598")
    assert direct[1:] == ["-m", "websockify", "127.0.0.1:6080", "127.0.0.1:18598"]
    routed = websockify_argv(6081, "/tmp/tokens")
    assert routed[-1] == "127.0.0.1:6081"
    assert routed[routed.index("--token-source") + 1] == "/tmp/tokens"
    chromium = bare_chromium_argv("/usr/bin/chromium", Path("/p"), "http://127.0.0.1:1/")
    assert chromium[0] == "/usr/bin/chromium" and chromium[-1] == "http://127.0.0.1:1/"
    assert "--user-data-dir=/p" in chromium
    assert "--window-size=1280,720" in chromium
    # Run as root, the bare script cannot have the sandbox Baton runs with.
    assert "--no-sandbox" in chromium


def test_etcd_listens_on_the_given_loopback_ports() -> None:
    argv = etcd_argv("etcd", Path("/d"), 2379, 2380)
    assert "--data-dir=/d" in argv
    assert "--listen-client-urls=http://127.0.0.1:2379" in argv
    assert "--initial-cluster=baton-bench=http://127.0.0.1:2380" in argv


def test_baton_s_own_processes_are_told_apart_by_service() -> None:
    assert baton_part(["/opt/baton/.venv/bin/python", "-m", "services.automation"]) == (
        "baton:automation"
    )
    assert baton_part(["python3", "-m", "services.edge"]) == "baton:edge"
    driver = [".venv/lib/python3.11/site-packages/playwright/driver/node", "cli.js"]
    assert baton_part(driver) == "baton:playwright-driver"
    assert baton_part(["python3", "-m", "deploy.local_stack"]) == "baton:other"


def test_the_knee_is_slower_starts_or_a_slower_probe() -> None:
    assert knee([1.0] * 19, []) is None
    assert knee([1.0] * 10 + [1.5] * 10, [10.0, 19.0]) is None
    reason = knee([1.0] * 10 + [2.5] * 10, [10.0])
    assert reason is not None and "start p50" in reason
    reason = knee([1.0] * 5, [10.0, 12.0, 21.0])
    assert reason is not None and "probe" in reason


def test_watchers_send_novnc_s_pixel_format_and_encodings() -> None:
    encodings = novnc_encodings()
    # Tight before Raw, JPEG quality 6 (-26), compression 2 (-254), the cursor last.
    assert encodings.index(7) < encodings.index(0)
    assert -26 in encodings and -254 in encodings and encodings[-1] == -239
    # No fences or continuous updates: a watcher that decodes nothing cannot answer them.
    assert -312 not in encodings and -313 not in encodings
    message = set_encodings([7, -26, 0xC0A1E5CE])
    assert message == bytes([2, 0, 0, 3]) + struct.pack(">iiI", 7, -26, 0xC0A1E5CE)
    # 32 bpp, depth 24, little endian, true colour, max 255, shifts 16/8/0.
    assert set_pixel_format() == bytes(
        [0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]
    )


def test_an_audience_s_cost_is_what_each_added_watcher_brings() -> None:
    def at(p50: float, edge: float, worker: float, processes: int) -> dict[str, Any]:
        return {
            "controller": {"p50": p50},
            "edge_pss_mib": edge,
            "worker": {"pss_mib": worker, "processes": processes},
            "watcher_min_bytes_after_presses": processes * 100,
        }

    figure = summarise({1: at(10.0, 60.0, 110.0, 4), 101: at(12.0, 80.0, 910.0, 104)})
    assert figure["ratio_p50"] == 1.2
    assert figure["edge_mib_per_watcher"] == 0.2
    assert figure["worker_mib_per_watcher"] == 8.0
    assert figure["worker_processes_per_watcher"] == 1.0
    assert figure["worker_processes"] == {"1": 4, "101": 104}
    assert figure["watcher_min_bytes_after_presses"] == 400
    assert per_added({1: 5.0}) is None
