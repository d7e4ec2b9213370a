"""Latency statistics the way trtexec reports them (min/mean/median/p90/p95/p99/max), so our numbers read
the same as every TensorRT benchmark a user has seen."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

PERCENTILES = (90, 95, 99)


def percentile(sorted_ms: Sequence[float], pct: float) -> float:
    """trtexec's percentile of an ascending sequence: drop the int((1 - pct/100) * n) largest samples and
    take the largest one left. Computed in float32 as trtexec does, so p90 of 10 samples is the 9th value."""
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {pct}")
    n = len(sorted_ms)
    if n == 0:
        return math.inf
    exclude = int((np.float32(1) - np.float32(pct) / np.float32(100)) * np.float32(n))
    return float(sorted_ms[max(n - 1 - exclude, 0)])


def median(sorted_ms: Sequence[float]) -> float:
    """The middle sample, or the mean of the two middle ones for an even count (trtexec's findMedian)."""
    n = len(sorted_ms)
    if n == 0:
        return math.inf
    m = n // 2
    return float(sorted_ms[m]) if n % 2 else (float(sorted_ms[m - 1]) + float(sorted_ms[m])) / 2


@dataclass(frozen=True)
class Summary:
    """One timing series in milliseconds. `cv` is the coefficient of variation (std / mean), trtexec's
    hint that a measurement is noisy."""

    count: int
    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    max: float
    cv: float

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(samples_ms: Sequence[float]) -> Summary:
    """The trtexec statistics of `samples_ms` (in any order). Raises ValueError on an empty series."""
    if len(samples_ms) == 0:
        raise ValueError("no samples to summarize")
    ordered = sorted(float(s) for s in samples_ms)
    mean = sum(ordered) / len(ordered)
    std = math.sqrt(sum((s - mean) ** 2 for s in ordered) / len(ordered))
    p90, p95, p99 = (percentile(ordered, p) for p in PERCENTILES)
    return Summary(count=len(ordered), min=ordered[0], mean=mean, median=median(ordered), p90=p90, p95=p95,
                   p99=p99, max=ordered[-1], cv=std / mean if mean > 0 else 0.0)
