"""`python -m bench.compare A.json B.json`: every figure's change between two runs.

Each number in a run's JSON (bench/results/) is a figure, named by its path
("density.baton.pss_mib_per_session.40.total"). Figures in both runs are printed
with A, B and B/A; those in one run only are listed after. What a run was made of
(plan, machine, load, date) is left out: it is not a result. Lists of samples
(start times) count by their length only. A regression shows as a ratio away from
1.00 in the wrong direction for that figure; which direction is wrong depends on
the figure (latency: up; sessions reached: down), so the ratio is printed, not
judged.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

# A run's description, not its results.
NOT_FIGURES = ("date", "mode", "plan", "machine", "loadavg_before", "loadavg_after", "duration_s")


def figures(run: Mapping[str, Any]) -> dict[str, float]:
    """Every number of a run, by dotted path."""
    found: dict[str, float] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, int | float):
            found[path] = float(value)
        elif isinstance(value, Mapping):
            for key, inner in value.items():
                walk(inner, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            found[f"{path}.count"] = float(len(value))

    for key, value in run.items():
        if key not in NOT_FIGURES:
            walk(value, key)
    return found


def rows(a: Mapping[str, float], b: Mapping[str, float]) -> Iterator[tuple[str, float, float, str]]:
    """(figure, A, B, B/A) for the figures both runs have, in A's order."""
    for name, before in a.items():
        if name in b:
            after = b[name]
            ratio = f"{after / before:.2f}x" if before else ("=" if after == before else "new")
            yield name, before, after, ratio


def load(path: Path) -> dict[str, Any]:
    try:
        run = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"bench.compare: cannot read {path}: {exc}") from None
    if not isinstance(run, dict):
        raise SystemExit(f"bench.compare: {path} is not a bench run (a JSON object)")
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("a", type=Path, help="the earlier run's JSON")
    parser.add_argument("b", type=Path, help="the later run's JSON")
    args = parser.parse_args(argv)
    a, b = figures(load(args.a)), figures(load(args.b))
    width = max((len(name) for name in a.keys() | b.keys()), default=10)
    print(f"{'figure':<{width}}  {'A':>12}  {'B':>12}  {'B/A':>7}")
    for name, before, after, ratio in rows(a, b):
        print(f"{name:<{width}}  {before:>12g}  {after:>12g}  {ratio:>7}")
    for label, only in (("only in A", a.keys() - b.keys()), ("only in B", b.keys() - a.keys())):
        if only:
            print(f"\n{label}: {len(only)} figures")
            for name in sorted(only):
                print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
