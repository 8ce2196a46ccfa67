"""`python -m bench.compare`: every figure's change between two runs (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.compare import figures, main, rows

EARLIER = {
    "date": "2026-11-25T08:45:57+00:00",
    "plan": {"presses": 100},
    "loadavg_before": [1.2, 1.8, 2.3],
    "latency": {"xvnc": {"edge": {"p50": 12.0, "p99": 20.0}}},
    "density": {"baton": {"sessions": 40, "start_s": [0.5, 0.6], "stopped_by": "cap"}},
    "gone": {"value": 3},
}
LATER = {
    "date": "2026-11-30T13:40:00+00:00",
    "plan": {"presses": 50},
    "latency": {"xvnc": {"edge": {"p50": 15.0, "p99": 20.0}}},
    "density": {"baton": {"sessions": 32, "start_s": [0.5, 0.6, 0.7]}},
    "new": {"value": 0.0},
}


def test_a_run_s_figures_are_its_numbers_by_path_without_its_description() -> None:
    assert figures(EARLIER) == {
        "latency.xvnc.edge.p50": 12.0,
        "latency.xvnc.edge.p99": 20.0,
        "density.baton.sessions": 40.0,
        "density.baton.start_s.count": 2.0,
        "gone.value": 3.0,
    }


def test_rows_give_both_values_and_their_ratio() -> None:
    found = {name: (a, b, ratio) for name, a, b, ratio in rows(figures(EARLIER), figures(LATER))}
    assert found["latency.xvnc.edge.p50"] == (12.0, 15.0, "1.25x")
    assert found["latency.xvnc.edge.p99"] == (20.0, 20.0, "1.00x")
    assert found["density.baton.sessions"] == (40.0, 32.0, "0.80x")
    assert "gone.value" not in found and "new.value" not in found


def test_the_command_prints_every_change_and_what_one_run_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(EARLIER))
    b.write_text(json.dumps(LATER))
    assert main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "latency.xvnc.edge.p50" in out and "1.25x" in out
    assert "only in A: 1 figures\n  gone.value" in out
    assert "only in B: 1 figures\n  new.value" in out


def test_a_file_that_is_not_a_run_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(SystemExit, match="is not a bench run"):
        main([str(bad), str(bad)])
    with pytest.raises(SystemExit, match="cannot read"):
        main([str(tmp_path / "missing.json"), str(bad)])
