"""The figures every benchmark prints: median and p99 of a list of timings."""

from __future__ import annotations

import statistics


def median_p99_ms(samples: list[float]) -> tuple[float, float]:
    """(median, p99) in milliseconds of ``samples`` in seconds (p99: the nearest-rank sample)."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000
