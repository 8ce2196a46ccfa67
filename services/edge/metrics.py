"""Prometheus text exposition of the edge's metrics, written by hand.

Everything is what this edge instance keeps: sessions by state are those its
WatchSession feeds follow (sessions created through it, watched or viewed
through it), handoffs, step durations and stream figures what it saw. A scrape
never lists sessions (served at any fleet size for the same cost).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

STEP_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in pairs)
    return f"{{{inner}}}" if inner else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value):
        return str(int(value))
    return repr(value)


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1

    def render(self, name: str) -> list[str]:
        lines = [
            f"{name}_bucket{_labels([('le', _number(bound))])} {count}"
            for bound, count in zip(self.buckets, self.counts, strict=True)
        ]
        lines.append(f"{name}_bucket{_labels([('le', '+Inf')])} {self.count}")
        lines.append(f"{name}_sum {_number(self.total)}")
        lines.append(f"{name}_count {self.count}")
        return lines


@dataclass
class EdgeMetrics:
    handoffs: Counter[str] = field(default_factory=Counter)
    http_requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    input_dropped: int = 0
    input_forwarded: int = 0
    stream_connections: int = 0
    step_durations: Histogram = field(default_factory=lambda: Histogram(STEP_DURATION_BUCKETS))

    def render(self, sessions_by_state: Mapping[str, int], service_up: bool) -> str:
        """The exposition text; service_up: the session service reports itself ready."""
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        family(
            "baton_sessions", "gauge", "Live sessions this edge follows (WatchSession), by state."
        )
        for state, count in sorted(sessions_by_state.items()):
            lines.append(f"baton_sessions{_labels([('state', state)])} {count}")
        family("baton_session_service_up", "gauge", "1 when the session service is ready.")
        lines.append(f"baton_session_service_up {1 if service_up else 0}")
        family("baton_handoffs_total", "counter", "Control changes made through this edge.")
        for action, count in sorted(self.handoffs.items()):
            lines.append(f"baton_handoffs_total{_labels([('action', action)])} {count}")
        family(
            "baton_step_duration_seconds",
            "histogram",
            "Duration of finished automation steps of sessions this edge watched.",
        )
        lines.extend(self.step_durations.render("baton_step_duration_seconds"))
        family("baton_stream_connections", "gauge", "Open stream WebSockets.")
        lines.append(f"baton_stream_connections {self.stream_connections}")
        family("baton_stream_input_messages_total", "counter", "RFB input messages by outcome.")
        lines.append(
            f"baton_stream_input_messages_total{_labels([('outcome', 'forwarded')])} "
            f"{self.input_forwarded}"
        )
        lines.append(
            f"baton_stream_input_messages_total{_labels([('outcome', 'dropped')])} "
            f"{self.input_dropped}"
        )
        family("baton_http_requests_total", "counter", "REST requests by route and status.")
        for (route, status), count in sorted(self.http_requests.items()):
            labels = _labels([("route", route), ("status", str(status))])
            lines.append(f"baton_http_requests_total{labels} {count}")
        return "\n".join(lines) + "\n"
