"""pytest plugin: a skipped test fails the run (issue 9).

`make test` installs every program and package the tests use, so a skip can
only hide a missing install step. Loaded for every run by pyproject.toml's
`addopts`, so `make test`, `.ci/run` and a plain `pytest` all keep the rule.
"""

from __future__ import annotations

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = len(reporter.stats.get("skipped", []))
    if skipped and exitstatus == pytest.ExitCode.OK:
        reporter.write_line(f"FAILED: {skipped} test(s) skipped; Baton's suite skips none")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
