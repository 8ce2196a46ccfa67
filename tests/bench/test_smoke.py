"""`python -m bench --smoke`: every figure runs end to end and produces numbers.

No thresholds here: benchmarks are not tests. This keeps the bench code from
rotting; `make bench` takes the real measurements.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import TARGETS_HEADING
from bench.session_start import MILESTONES
from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parents[2]


def numbers(figures: dict[str, Any], *keys: str) -> list[float]:
    return [float(figures[key]) for key in keys]


@pytest.mark.timeout(360)
def test_smoke_run_produces_every_figure(tmp_path: Path) -> None:
    for name, package in (
        ("Xvnc", "tigervnc-standalone-server"),
        ("Xvfb", "xvfb"),
        ("x11vnc", "x11vnc"),
        ("chromium", "chromium"),
        ("etcd", "etcd-server"),
    ):
        require_binary(name, package)
    out = tmp_path / "smoke.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=340,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert TARGETS_HEADING in run.stdout

    for backend in ("xvnc", "xvfb-x11vnc"):
        latency = results["latency"][backend]
        for path in ("edge", "bare"):
            assert latency[path]["n"] >= 1
            assert all(value > 0 for value in numbers(latency[path], "p50", "p90", "p99"))
        assert latency["ratio_p50"] > 0

    for kind in ("cold", "warm", "bare_cold"):
        assert all(value > 0 for value in numbers(results["session_start"][kind], "p50", "p99"))
    for kind in ("cold", "warm"):
        # Where a start's time goes, from the page's own report.
        reached = {name: results["session_start"][kind][name]["p50"] for name in MILESTONES}
        assert 0 < reached["navigation_start"] < reached["load"] <= reached["frame"], reached
        assert reached["post_answered"] > 0 and reached["viewer_first_update"] > 0, reached
    assert results["session_start"]["cold_vs_bare_p50"] > 0

    # Issue 16, figure 1: noVNC at each quality setting, through the edge and bare,
    # and the rectangles it decoded were Tight ones.
    for quality in ("novnc-default", "low", "medium", "high"):
        real = results["real_viewer"][quality]
        for path in ("edge", "bare"):
            assert real[path]["n"] == 2
            assert all(value > 0 for value in numbers(real[path], "p50", "p99"))
            assert real["rectangles"][path].get("tight", 0) >= 1
        assert real["ratio_p50"] > 0 and real["ratio_p99"] > 0

    # Issue 16, figure 6: a viewer joining, noVNC and the Python viewer.
    for viewer in ("novnc", "python_raw"):
        joins = results["viewer_join"][viewer]
        for path in ("edge", "bare"):
            assert joins[path]["n"] == 3 and joins[path]["p50"] > 0
        assert joins["ratio_p50"] > 0
    # noVNC also joins watch-only, served by the session's feed.
    assert results["viewer_join"]["novnc"]["watch"]["n"] == 3

    for name in ("take_control_to_first_key", "take_control_put", "return_control_to_next_step"):
        assert results["handoff"][name]["n"] >= 1
        assert results["handoff"][name]["p99"] > 0

    density = results["density"]
    assert density["baton"]["sessions"] >= 1
    final = density["baton"]["pss_mib_per_session"][str(density["baton"]["sessions"])]
    assert final["chromium"] > 0 and final["x_vnc"] > 0 and final["baton"] > 0
    assert density["baton"]["idle_cpu_percent_of_one_core"] >= 0
    assert density["versus_bare"]["bare_total_mib"] > 0
    assert density["versus_bare"]["ratio"] > 0

    # Over the emulated link: keys took at least its round trip; the scroll was
    # seen on both paths.
    link = results["network"]["40ms-20mbit"]
    assert link["key_to_pixel"]["edge"]["p50"] >= 40 and link["key_to_pixel"]["bare"]["p50"] >= 40
    for path in ("edge", "bare"):
        scroll = link["scroll"]["novnc-default"][path]
        assert scroll["kbytes_per_s"] > 0 and scroll["frames_per_s"] > 0
    # The probe alone, then beside a busy agent that did steps meanwhile.
    assert density["baton"]["probe_p50_ms_every_10"][0] > 0
    under_load = results["under_load"]
    assert under_load["0"]["p50"] > 0 and under_load["1"]["p50"] > 0
    assert under_load["1"]["agent_steps_per_s"] > 0
    assert under_load["ratio_p50"] > 0
    fan_out = results["fan_out"]
    assert fan_out["1"]["p50"] > 0
    assert fan_out["ratio_p50"] > 0

    # Issue 16, figure 7: every watch-only viewer got bytes after the controller's
    # presses; the edge and the worker's processes were measured at each size.
    audience = results["audience"]
    for watchers in ("1", "3"):
        at = audience[watchers]
        assert at["watchers"] == int(watchers) and at["watchers_closed"] == 0
        assert at["watcher_min_bytes_after_presses"] > 0
        assert at["controller"]["n"] == 3 and at["controller"]["p50"] > 0
        assert at["edge_pss_mib"] > 0
        assert at["worker"]["processes_by_kind"]["x_vnc"] >= 1 and at["worker"]["pss_mib"] > 0
    assert audience["ratio_p50"] > 0 and audience["edge_mib_per_watcher"] is not None

    for store in ("memory", "etcd", "etcd_2_replicas"):
        control = results["control_plane"][store]
        assert control["per_second"] > 0 and control["p99"] > 0
    assert results["control_plane"]["etcd_2_replicas"]["replicas"] == 2

    plane = results["session_plane"]["2x4"]
    assert plane["create"]["n"] == 4 and plane["listed"] == 4
    assert plane["creates_per_second"] > 0

    cluster = results["cluster"]
    assert cluster["creates"]["n"] == 2 and cluster["creates"]["per_second"] > 0
    assert sum(cluster["creates"]["per_host"].values()) == 2
    assert cluster["failover"]["n"] == 1 and cluster["failover"]["max"] > 0
