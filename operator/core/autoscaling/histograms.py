"""Moments of a Prometheus histogram from its cumulative buckets, for output-length spread.

PromQL has `histogram_quantile` but no variance; the QLM bound needs the standard deviation of output
lengths. The Prometheus adapter fetches the bucket increases (`le` → cumulative count) and calls
`bucket_std`. Each bucket's observations are placed at its midpoint (the `+Inf` bucket at the last
finite bound), so spread inside a bucket is ignored. Pure.
"""

import math
from collections.abc import Mapping


def bucket_std(cumulative: Mapping[float, float]) -> float | None:
    """Standard deviation from cumulative bucket counts keyed by upper bound; None without observations."""
    bounds = sorted(cumulative)
    finite = [b for b in bounds if math.isfinite(b)]
    if not finite:
        return None
    total = weighted = weighted_sq = 0.0
    lower = 0.0
    below = 0.0
    for bound in bounds:
        count = max(0.0, cumulative[bound] - below)
        below = max(below, cumulative[bound])
        point = (lower + bound) / 2.0 if math.isfinite(bound) else finite[-1]
        total += count
        weighted += count * point
        weighted_sq += count * point * point
        if math.isfinite(bound):
            lower = bound
    if total <= 0:
        return None
    mean = weighted / total
    return math.sqrt(max(0.0, weighted_sq / total - mean * mean))
