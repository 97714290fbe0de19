"""Helpers shared by the benchmarks: timing and a plain-text table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeat: int = 5) -> float:
    """Best wall time of ``repeat`` calls, in seconds (the least disturbed by a noisy machine)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    """Median, p95 and p99 of ``samples``."""
    s = sorted(samples)
    pick = lambda q: s[min(len(s) - 1, round(q * (len(s) - 1)))]  # noqa: E731
    return statistics.median(s), pick(0.95), pick(0.99)


def table(title: str, rows: list[tuple[str, str, str]]) -> None:
    """Print ``(measure, figure, goal)`` rows under a title."""
    print(f"\n## {title}\n")
    print("| measure | figure | goal |\n| --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
