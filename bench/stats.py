"""Percentiles and summaries of timing samples."""

from __future__ import annotations

import statistics
from typing import Any


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in 0..1) of a non-empty list."""
    ordered = sorted(samples)
    return ordered[min(round(fraction * (len(ordered) - 1)), len(ordered) - 1)]


def summary_ms(samples_s: list[float]) -> dict[str, Any]:
    """n, p50, p90, p99, min, max and mean in milliseconds of samples in seconds."""
    if not samples_s:
        return {"n": 0}
    ms = [s * 1000 for s in samples_s]
    return {
        "n": len(ms),
        "p50": round(statistics.median(ms), 2),
        "p90": round(percentile(ms, 0.90), 2),
        "p99": round(percentile(ms, 0.99), 2),
        "min": round(min(ms), 2),
        "max": round(max(ms), 2),
        "mean": round(statistics.fmean(ms), 2),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)
