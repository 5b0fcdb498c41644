"""The recent ratios of observed to predicted time per output token, and the share above a threshold.

The sloguard policy (sidecar/core/policies/sloguard.py) records one ratio per completed request (its
mean TPOT over the inter-token time the model predicted when it was released) and its TPOT-gate waiver
(`_blockers_lost_if_released`) reads how likely a running request is to miss its target in a batch the
model prices at some inter-token time: the share of recent ratios that would put it over. Pure.
"""

from bisect import bisect_right, insort
from collections import deque


class RecentTpotRatios:
    """The last `size` ratios, kept in arrival order and sorted (so a share is one bisection)."""

    def __init__(self, size: int = 64) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self._order: deque[float] = deque()
        self._sorted: list[float] = []
        self._size = size

    def __len__(self) -> int:
        return len(self._order)

    def observe(self, ratio: float) -> None:
        if len(self._order) == self._size:
            oldest = self._order.popleft()
            del self._sorted[bisect_right(self._sorted, oldest) - 1]
        self._order.append(ratio)
        insort(self._sorted, ratio)

    def share_above(self, threshold: float) -> float:
        """The share of the recent ratios strictly above `threshold` (0 with none recorded)."""
        if not self._sorted:
            return 0.0
        return (len(self._sorted) - bisect_right(self._sorted, threshold)) / len(self._sorted)
