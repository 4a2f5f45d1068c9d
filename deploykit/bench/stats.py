"""Latency statistics from per-call samples: median and tail percentiles, throughput, geometric means.

Percentiles use linear interpolation between order statistics (numpy's default), so p99 of 100 samples is
not simply the largest one. No heavy imports: this module is used by the results-table writers too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, linearly interpolated."""
    if not sorted_values:
        raise ValueError("percentile of no samples")
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac)


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-call latencies, all in milliseconds.

    Attributes:
        samples: number of timed calls.
        median_ms, p90_ms, p99_ms, mean_ms, min_ms, max_ms: the usual order statistics.
        throughput: samples (batch items) per second at the median latency.
    """

    samples: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    throughput: float

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(seconds: Iterable[float], batch: int) -> LatencyStats:
    """Statistics of per-call wall times given in seconds for calls that each process `batch` items."""
    ms = sorted(float(s) * 1e3 for s in seconds)
    if not ms:
        raise ValueError("no timed calls to summarize")
    median = percentile(ms, 50)
    return LatencyStats(
        samples=len(ms), median_ms=median, p90_ms=percentile(ms, 90), p99_ms=percentile(ms, 99),
        mean_ms=sum(ms) / len(ms), min_ms=ms[0], max_ms=ms[-1],
        throughput=batch / (median / 1e3) if median > 0 else float("inf"),
    )


def geomean(values: Iterable[float]) -> float:
    """Geometric mean of positive values (NaN when there are none or one is not positive)."""
    vals = [float(v) for v in values]
    if not vals or any(not v > 0 for v in vals):
        return float("nan")
    return math.exp(sum(math.log(v) for v in vals) / len(vals))
