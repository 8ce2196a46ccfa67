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

from services.runtime.slot_demand import FleetCapacity, RefusalWindow, slot_demand

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


@dataclass(frozen=True)
class WebhookCounts:
    """The session service's webhook deliveries (GetWebhookStats)."""

    attempts: int
    failed_attempts: int
    delivered: int
    dropped: int


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
    # Upstreams serving watch-only streams (stream_feed.py): one per session and
    # viewer format, whatever the number of watchers.
    stream_feeds: int = 0
    step_durations: Histogram = field(default_factory=lambda: Histogram(STEP_DURATION_BUCKETS))
    # The autoscaling signal (services/runtime/slot_demand.py): creates this edge
    # answered 429 for want of a slot, and the spare slots wanted.
    capacity_refusals: RefusalWindow = field(default_factory=lambda: RefusalWindow(120.0))
    capacity_refusals_total: int = 0
    slot_headroom: int = 0
    # External CDP clients (cdp_proxy.py): connections open, and what the control
    # gate did with their commands while a person had control.
    cdp_connections: int = 0
    cdp_commands_held: int = 0
    cdp_held_seconds: float = 0.0
    cdp_commands_rejected: int = 0

    def refused_for_capacity(self, now: float) -> None:
        self.capacity_refusals.record(now)
        self.capacity_refusals_total += 1

    def render(
        self,
        sessions_by_state: Mapping[str, int],
        service_up: bool,
        capacity: FleetCapacity | None = None,
        now: float = 0.0,
        webhooks: WebhookCounts | None = None,
    ) -> str:
        """The exposition text; service_up: the session service reports itself ready;
        capacity: the fleet's slots (None: unknown, the slot gauges are left out);
        now: the monotonic clock the refusals were recorded with; webhooks: the
        session service's webhook deliveries (None: off or unknown, left out)."""
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
        family(
            "baton_stream_feeds",
            "gauge",
            "Upstream connections serving watch-only streams (one per session and format).",
        )
        lines.append(f"baton_stream_feeds {self.stream_feeds}")
        family("baton_stream_input_messages_total", "counter", "RFB input messages by outcome.")
        lines.append(
            f"baton_stream_input_messages_total{_labels([('outcome', 'forwarded')])} "
            f"{self.input_forwarded}"
        )
        lines.append(
            f"baton_stream_input_messages_total{_labels([('outcome', 'dropped')])} "
            f"{self.input_dropped}"
        )
        refused = self.capacity_refusals.count(now)
        family(
            "baton_capacity_refusals_total",
            "counter",
            "Creates this edge answered 429 because no worker host had a free slot.",
        )
        lines.append(f"baton_capacity_refusals_total {self.capacity_refusals_total}")
        family(
            "baton_slot_refusals_recent",
            "gauge",
            "Of those, the ones within the refusal window (BATON_SLOT_REFUSAL_WINDOW_S).",
        )
        lines.append(f"baton_slot_refusals_recent {refused}")
        family("baton_slot_headroom", "gauge", "Spare slots wanted (BATON_SLOT_HEADROOM).")
        lines.append(f"baton_slot_headroom {self.slot_headroom}")
        if capacity is not None and capacity.capacity_known:
            family("baton_worker_hosts", "gauge", "Registered worker hosts, by state.")
            serving = capacity.worker_hosts - capacity.draining_hosts
            lines.append(f"baton_worker_hosts{_labels([('state', 'serving')])} {serving}")
            lines.append(
                f"baton_worker_hosts{_labels([('state', 'draining')])} {capacity.draining_hosts}"
            )
            family("baton_slots_total", "gauge", "Slots of the worker hosts taking sessions.")
            lines.append(f"baton_slots_total {capacity.slots_total}")
            family("baton_slots_held", "gauge", "Slots held by live sessions, on every host.")
            lines.append(f"baton_slots_held {capacity.slots_held}")
            family("baton_slots_warm", "gauge", "Warm slots ready, on every host.")
            lines.append(f"baton_slots_warm {capacity.slots_warm}")
            family(
                "baton_slot_demand",
                "gauge",
                "Slots wanted as this edge sees it: held + refused recently + headroom.",
            )
            demand = slot_demand(capacity.slots_held, refused, self.slot_headroom)
            lines.append(f"baton_slot_demand {demand}")
        if webhooks is not None:
            family(
                "baton_webhook_attempts_total",
                "counter",
                "Webhook POSTs the session service tried, by outcome (ok: a 2xx answer).",
            )
            ok = webhooks.attempts - webhooks.failed_attempts
            lines.append(f"baton_webhook_attempts_total{_labels([('outcome', 'ok')])} {ok}")
            lines.append(
                f"baton_webhook_attempts_total{_labels([('outcome', 'failed')])} "
                f"{webhooks.failed_attempts}"
            )
            family(
                "baton_webhook_events_total",
                "counter",
                "Webhook events by outcome: delivered, or dropped (attempts exhausted, "
                "shutdown, too many in delivery).",
            )
            for outcome, count in (
                ("delivered", webhooks.delivered),
                ("dropped", webhooks.dropped),
            ):
                lines.append(f"baton_webhook_events_total{_labels([('outcome', outcome)])} {count}")
        family(
            "baton_cdp_connections", "gauge", "External CDP clients connected through this edge."
        )
        lines.append(f"baton_cdp_connections {self.cdp_connections}")
        family(
            "baton_cdp_commands_held_total",
            "counter",
            "CDP commands held because a person had control of the session.",
        )
        lines.append(f"baton_cdp_commands_held_total {self.cdp_commands_held}")
        family(
            "baton_cdp_held_seconds_total",
            "counter",
            "Seconds CDP commands were held, summed over the released ones.",
        )
        lines.append(f"baton_cdp_held_seconds_total {_number(self.cdp_held_seconds)}")
        family(
            "baton_cdp_commands_rejected_total",
            "counter",
            "CDP commands refused at once because a person had control (onUserControl=reject).",
        )
        lines.append(f"baton_cdp_commands_rejected_total {self.cdp_commands_rejected}")
        family("baton_http_requests_total", "counter", "REST requests by route and status.")
        for (route, status), count in sorted(self.http_requests.items()):
            labels = _labels([("route", route), ("status", str(status))])
            lines.append(f"baton_http_requests_total{labels} {count}")
        return "\n".join(lines) + "\n"
