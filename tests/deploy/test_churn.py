"""Create/delete churn against `make run`: nothing leaks, memory stays flat.

`make test` runs a short churn; `make test-churn` (marker `churn`, which `.ci/run`
runs after `make test`) runs the issue's 200 cycles. Both print their figures:
cycles, seconds, and each service's resident memory growth.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_binary
from tests.deploy.churn_run import (
    CRASH_HANDLERS_PER_BROWSER,
    SERVICES,
    Footprint,
    quiet,
    rss,
    run_cycles,
)
from tests.deploy.stack_process import LauncherStack

DISPLAYS = "1010-1029"
DISPLAY_NUMBERS = range(1010, 1030)
VNC_PORTS = "17010-17029"
# Cycles after the warm-up; half are deleted right after create.
WARM_UP = 6
SHORT_CYCLES = 20
CHURN_CYCLES = 200
PARALLEL = 3
# Fewer warm slots than cycles at a time: creates also take slots still starting
# and evict warm ones mid-launch, the paths where a pre-warmed browser could leak.
WARM_SLOTS = 2
MAX_SLOTS = 6
# Most a service's resident memory may grow over the cycles after the warm-up (the
# issue's "flat within a stated bound"). Measured over 200 cycles on 2 loaded cores,
# two runs: display 456/440 KiB, automation 1948/2268, session 1460/1484, edge 912/796.
RSS_BOUND_KIB = {"display": 2 * 1024, "automation": 4 * 1024, "session": 4 * 1024, "edge": 4 * 1024}
QUIET_TIMEOUT_S = 60


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


def check_only_warm_slots_left(now: Footprint, then: Footprint) -> None:
    """What a quiet stack holds, compared with the quiet stack after the warm-up."""
    assert now.exiting == 0, f"zombies or processes not exiting: {now.summary()}"
    # One browser per warm slot, each on its own profile, and no profile without one.
    assert len(now.profiles) == WARM_SLOTS, now.summary()
    assert set(now.browsers) == set(now.profiles), now.summary()
    assert len(now.x_locks) == WARM_SLOTS, now.summary()
    assert now.crash_handlers <= CRASH_HANDLERS_PER_BROWSER * WARM_SLOTS, now.summary()
    # The services, their driver and websockify, the warm slots' X servers.
    assert now.programs == then.programs, (now.summary(), then.summary())
    assert now.listening == then.listening, (now.summary(), then.summary())
    # Each warm browser's own TMPDIR and Playwright's artifacts dir, and the
    # automation service's CDP hub (services/automation/cdp_hub.py), nothing else.
    assert now.temp_dirs == Counter(
        {"baton-tmp": WARM_SLOTS, "playwright-artifacts": WARM_SLOTS, "baton-cdp": 1}
    )


def churn(stack: LauncherStack, cycles: int) -> None:
    run_cycles(stack, WARM_UP, PARALLEL)  # caches, lazy imports, gRPC channels
    baseline = quiet(stack, DISPLAY_NUMBERS, WARM_SLOTS, QUIET_TIMEOUT_S)
    check_only_warm_slots_left(baseline, baseline)
    memory = rss(stack)
    elapsed = run_cycles(stack, cycles, PARALLEL)
    after = quiet(stack, DISPLAY_NUMBERS, WARM_SLOTS, QUIET_TIMEOUT_S)
    grown = {name: kib - memory[name] for name, kib in rss(stack).items()}
    print(
        f"\nchurn: {cycles} create/delete cycles ({PARALLEL} at a time, half deleted right "
        f"after create) in {elapsed:.1f} s; RSS growth KiB {grown} "
        f"(bounds {RSS_BOUND_KIB}); after: {after.summary()}"
    )
    check_only_warm_slots_left(after, baseline)
    assert all(grown[name] < RSS_BOUND_KIB[name] for name in SERVICES), grown


@pytest.mark.timeout(300)
def test_create_delete_churn_leaks_nothing(stack: LauncherStack) -> None:
    churn(stack, SHORT_CYCLES)


# The 200 cycles: about 3 minutes on 2 cores; `make test-churn`.
@pytest.mark.churn
@pytest.mark.timeout(900)
def test_200_create_delete_cycles_leak_nothing(stack: LauncherStack) -> None:
    churn(stack, CHURN_CYCLES)
