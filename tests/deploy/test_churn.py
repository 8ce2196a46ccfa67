"""Create/delete churn against `make run`: nothing leaks, memory stays flat."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import require_binary
from tests.deploy.stack_process import LauncherStack, listening_inodes, process_tree, rss_kib

DISPLAYS = "1010-1029"
VNC_PORTS = "19210-19229"
# The 200 cycles, after a warm-up; half are deleted right after create.
# Each cycle costs a Chromium and an Xvnc started for the warm slot it takes
# (about 0.4 s on an idle 2-core machine, 3 cycles at a time: README "Churn").
WARM_UP = 12
CYCLES = 200
PARALLEL = 3
# Warm slots for the 3 cycles at a time, so that creates rarely wait for a slot.
WARM_SLOTS = 4
MAX_SLOTS = 8
# Most a service's resident memory may grow over the 200 cycles (after warming
# up): about 10 KiB a cycle for automation, which kept each closed browser's
# Playwright objects until a rare full collection (about 40 KiB a cycle).
RSS_BOUND_KIB = {"automation": 2 * 1024, "display": 4 * 1024, "session": 4 * 1024, "edge": 4 * 1024}
SERVICES = ("display", "automation", "session", "edge")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LauncherStack]:
    require_binary("Xvnc", "tigervnc-standalone-server")
    require_binary("chromium", "chromium")
    running = LauncherStack(
        tmp_path,
        DISPLAYS,
        VNC_PORTS,
        BATON_MAX_SLOTS=str(MAX_SLOTS),
        BATON_WARM_SLOTS=str(WARM_SLOTS),
    )
    try:
        running.wait_for_line("all services ready", 90)
        yield running
    finally:
        assert running.stop() == 0


def cycle(stack: LauncherStack, index: int) -> None:
    session = stack.create_session()
    if index % 2:
        # Half wait for the browser to be up; half are deleted right after create.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            got = stack.request("GET", f"/api/browser-session/{session['id']}")
            if got["task"]["status"] != "PENDING":
                break
            time.sleep(0.1)
    stack.request("DELETE", f"/api/browser-session/{session['id']}")


def footprint(stack: LauncherStack) -> dict[str, object]:
    tree = process_tree(stack.process.pid)
    x_locks = sorted(
        p.name for p in Path("/tmp").glob(".X10[0-2][0-9]-lock") if 1010 <= int(p.name[2:6]) <= 1029
    )
    return {
        "processes": len(tree),
        "listening": len(listening_inodes(tree)),
        "x locks": x_locks,
        "profiles": sorted(p.name for p in stack.profiles.glob("*")),
        "temp dirs": sorted(p.name for p in stack.tmp.iterdir()),
    }


def settled(
    stack: LauncherStack, before: dict[str, object], timeout: float = 30
) -> dict[str, object]:
    """The footprint once ended sessions are released and warm slots refilled."""
    deadline = time.monotonic() + timeout
    while True:
        now = footprint(stack)
        if (
            now["processes"] == before["processes"]
            and now["listening"] == before["listening"]
            and len(now["profiles"]) == len(before["profiles"])  # type: ignore[arg-type]
        ):
            return now
        if time.monotonic() > deadline:
            return now
        time.sleep(0.5)


def rss(stack: LauncherStack) -> dict[str, int]:
    return {name: rss_kib(stack.service_pid(name)) for name in SERVICES}


# About 100 s on an idle machine; room for a loaded one.
@pytest.mark.timeout(300)
def test_create_delete_churn_leaks_nothing(stack: LauncherStack) -> None:
    with ThreadPoolExecutor(PARALLEL) as pool:
        # Warm-up: caches, lazily imported modules, gRPC channels.
        list(pool.map(lambda i: cycle(stack, i), range(WARM_UP)))
        baseline = settled(stack, footprint(stack))
        memory = rss(stack)
        started = time.monotonic()
        list(pool.map(lambda i: cycle(stack, i), range(CYCLES)))
    elapsed = time.monotonic() - started
    after = settled(stack, baseline)
    grown = {name: kib - memory[name] for name, kib in rss(stack).items()}
    print(f"{CYCLES} cycles in {elapsed:.1f} s; RSS growth KiB {grown}; baseline {baseline}")
    assert after["processes"] == baseline["processes"], (after, baseline)
    assert after["listening"] == baseline["listening"]
    # Only the warm slots' displays, browsers and their temp dirs are left.
    assert len(after["x locks"]) == len(baseline["x locks"])  # type: ignore[arg-type]
    assert len(after["profiles"]) == len(baseline["profiles"])  # type: ignore[arg-type]
    assert after["temp dirs"] == baseline["temp dirs"]
    assert all(grown[name] < RSS_BOUND_KIB[name] for name in SERVICES), grown
