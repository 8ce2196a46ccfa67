"""Benchmarks: runnable scripts that print measurements (never thresholds)."""
