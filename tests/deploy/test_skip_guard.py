"""The skip guard of tests/skip_guard.py, run on a throwaway test file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_pytest(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    test_file = tmp_path / "test_throwaway.py"
    test_file.write_text("import pytest\n\n\n" + body)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.skip_guard", "-q", str(test_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_passing_run_passes(tmp_path: Path) -> None:
    run = run_pytest(tmp_path, "def test_ok():\n    assert True\n")
    assert run.returncode == 0, run.stdout
    assert "1 passed" in run.stdout


def test_a_skipped_test_fails_the_run(tmp_path: Path) -> None:
    run = run_pytest(
        tmp_path, 'def test_ok():\n    assert True\n\n\ndef test_skips():\n    pytest.skip("x")\n'
    )
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout
    assert "1 passed, 1 skipped" in run.stdout
    assert "1 test(s) skipped; Baton's suite skips none" in run.stdout
