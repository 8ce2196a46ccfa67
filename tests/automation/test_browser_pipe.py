"""browser-pipe.py's argv: one switch of each feature kind (Chromium keeps the last)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from services.automation.cdp_hub import PIPE_PROGRAM


def browser_pipe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("browser_pipe", PIPE_PROGRAM)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_feature_switches_are_merged_where_the_first_was() -> None:
    merge = browser_pipe().merge_feature_switches
    argv = [
        "--a",
        "--disable-features=A,B",
        "--enable-features=X",
        "--b",
        "--disable-features=B,C",
        "--enable-features=Y,",
        "about:blank",
    ]
    assert merge(argv) == [
        "--a",
        "--enable-features=X,Y",
        "--disable-features=A,B,C",
        "--b",
        "about:blank",
    ]


def test_argv_without_feature_switches_or_after_the_separator_is_kept() -> None:
    merge = browser_pipe().merge_feature_switches
    assert merge(["--a", "url"]) == ["--a", "url"]
    assert merge(["--disable-features=A", "--", "--disable-features=B"]) == [
        "--disable-features=A",
        "--",
        "--disable-features=B",
    ]
