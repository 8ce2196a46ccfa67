"""How many samples each figure takes, full run or smoke, and the targets from issue 6."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    presses: int = 100
    starts: int = 20
    bare_starts: int = 20
    handoffs: int = 100
    # The bench's 100 displays, less the probe's and a few spare.
    density_cap: int = 96
    density_checkpoints: tuple[int, ...] = (1, 2, 5, 10, 20, 30, 40, 60, 80)
    # The bare stack's sessions for figure 5's comparison (Chromium's defaults
    # cost more memory: 96 of them would not fit).
    bare_density_cap: int = 40
    idle_cpu_s: float = 10.0
    fan_out: tuple[int, ...] = (1, 10, 50)
    fan_out_presses: int = 50
    control_clients: int = 8
    control_cycles: int = 100
    # (simulated hosts, sessions) of the session plane figure.
    plane_scales: tuple[tuple[int, int], ...] = ((2, 40), (10, 200), (50, 1000))
    # The real cluster: sessions created at once, and worker hosts killed.
    cluster_sessions: int = 10
    cluster_kills: int = 10


FULL = Plan()
SMOKE = Plan(
    presses=4,
    starts=2,
    bare_starts=1,
    handoffs=3,
    density_cap=2,
    density_checkpoints=(1, 2),
    bare_density_cap=2,
    idle_cpu_s=1.0,
    fan_out=(1, 3),
    fan_out_presses=3,
    control_clients=2,
    control_cycles=5,
    plane_scales=((2, 4),),
    cluster_sessions=2,
    cluster_kills=1,
)


@dataclass(frozen=True)
class Target:
    figure: str
    what: str
    # Where the measured value is in the results: keys from the figure down.
    path: tuple[str, ...]
    limit: float
    unit: str
    at_least: bool = False

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value >= self.limit if self.at_least else value <= self.limit


TARGETS = (
    Target("1", "edge/bare p50, xvnc", ("latency", "xvnc", "ratio_p50"), 1.10, "x"),
    Target("1", "edge/bare p50, xvfb-x11vnc", ("latency", "xvfb-x11vnc", "ratio_p50"), 1.10, "x"),
    Target("1", "edge p50, xvnc", ("latency", "xvnc", "edge", "p50"), 20.0, "ms"),
    Target("2", "warm start p50", ("session_start", "warm", "p50"), 250.0, "ms"),
    Target("2", "cold start p50", ("session_start", "cold", "p50"), 1500.0, "ms"),
    Target("3", "take_control p99", ("handoff", "take_control_to_first_key", "p99"), 100.0, "ms"),
    Target("4", "sessions reached", ("density", "baton", "sessions"), 80, "", at_least=True),
    Target("5", "PSS per session / bare default", ("density", "versus_bare", "ratio"), 0.75, "x"),
    Target(
        "5",
        "idle CPU per session, % of a core",
        ("density", "baton", "idle_cpu_percent_per_session"),
        0.3,
        "",
    ),
    Target("5", "p50 at most viewers / one", ("fan_out", "ratio_p50"), 1.5, "x"),
)
