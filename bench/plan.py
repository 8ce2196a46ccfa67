"""How many samples each figure takes, full run or smoke, and the targets of issues 6 and 16.

Issue 16's figures are numbered "2.N" (second round, its figure N) beside issue 6's.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.link import PROFILES, LinkProfile


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
    # Issue 16: presses per quality setting and path through noVNC (2.1), and
    # viewers joining a running session (2.6).
    real_viewer_presses: int = 100
    joins: int = 20
    # The emulated links (2.2), presses over each, scrolls per quality and path.
    link_profiles: tuple[LinkProfile, ...] = PROFILES
    link_presses: int = 50
    scroll_repeats: int = 3
    # Busy sessions beside the probe (2.3), and the probe's presses at each count.
    busy_loads: tuple[int, ...] = (0, 10, 20)
    under_load_presses: int = 50
    # Watch-only viewers on one session (2.7), and the controller's presses at each.
    audiences: tuple[int, ...] = (1, 100, 250, 500)
    audience_presses: int = 50


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
    real_viewer_presses=2,
    joins=3,
    busy_loads=(0, 1),
    under_load_presses=3,
    link_profiles=PROFILES[:1],
    link_presses=3,
    scroll_repeats=1,
    audiences=(1, 3),
    audience_presses=3,
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
    Target("4", "sessions reached", ("density", "baton", "sessions"), 40, "", at_least=True),
    Target("5", "p50 at most viewers / one", ("fan_out", "ratio_p50"), 1.5, "x"),
    # Issue 16, figure 2: over each emulated link (bench/network.py).
    *(
        target
        for profile in PROFILES
        for target in (
            Target(
                "2.2",
                f"{profile.name}: key to pixel p50 over RTT",
                ("network", profile.name, "edge_p50_over_rtt_ms"),
                20.0,
                "ms",
            ),
            Target(
                "2.2",
                f"{profile.name}: scroll kB/s edge/bare",
                ("network", profile.name, "scroll", "novnc-default", "ratio_kbytes_per_s"),
                1.02,
                "x",
            ),
            Target(
                "2.2",
                f"{profile.name}: scroll fps edge/bare",
                ("network", profile.name, "scroll", "novnc-default", "ratio_frames_per_s"),
                0.98,
                "x",
                at_least=True,
            ),
        )
    ),
    # Issue 16, figure 3: the probe while 20 busy agents work (bench/under_load.py).
    Target("2.3", "key to pixel p50, 20 busy / idle", ("under_load", "ratio_p50"), 2.0, "x"),
    # Issue 16, figure 4: uncapped, to the knee (bench/density.py).
    Target("2.4", "sessions reached", ("density", "baton", "sessions"), 80, "", at_least=True),
    # Issue 16, figure 5: Baton's Chromium flags against Chromium's defaults.
    Target("2.5", "PSS per session / bare default", ("density", "versus_bare", "ratio"), 0.75, "x"),
    Target(
        "2.5",
        "idle CPU per session, % of a core",
        ("density", "baton", "idle_cpu_percent_per_session"),
        0.3,
        "",
    ),
    # Issue 16, figure 7: watch-only audiences (bench/audience.py). The worker's
    # cost is to be flat in the audience: at most 50 MiB and 5 processes over 500.
    Target("2.7", "controller p50, most watchers / one", ("audience", "ratio_p50"), 1.5, "x"),
    Target("2.7", "worker MiB per added watcher", ("audience", "worker_mib_per_watcher"), 0.1, "M"),
    Target(
        "2.7",
        "worker processes per added watcher",
        ("audience", "worker_processes_per_watcher"),
        0.01,
        "",
    ),
    # Issue 16, figure 1: through noVNC, at each quality setting (bench/real_viewer.py).
    *(
        Target(
            "2.1", f"noVNC edge/bare {stat}, {quality}", ("real_viewer", quality, key), limit, "x"
        )
        for quality in ("novnc-default", "low", "medium", "high")
        for stat, key, limit in (("p50", "ratio_p50", 1.05), ("p99", "ratio_p99", 1.10))
    ),
    # Issue 16, figure 6.
    Target(
        "2.6", "cold start / bare cold start, p50", ("session_start", "cold_vs_bare_p50"), 1.0, "x"
    ),
    Target("2.6", "warm start p50", ("session_start", "warm", "p50"), 100.0, "ms"),
    Target(
        "2.6",
        "noVNC join, GET stream to first frame, p50",
        ("viewer_join", "novnc", "edge", "p50"),
        50.0,
        "ms",
    ),
    Target(
        "2.6",
        "noVNC watch-only join, another watching, p50",
        ("viewer_join", "novnc", "watch", "p50"),
        50.0,
        "ms",
    ),
)
