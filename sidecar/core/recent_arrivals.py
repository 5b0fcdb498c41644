"""The recent arrival times of admitted requests, grouped by their (TTFT, TPOT) targets.

Used by the sloguard policy's TPOT-gate waiver (sidecar/core/policies/sloguard.py `_waive_blockers`) to
mirror the last `hold_s` of arrivals onto the next: holding the gate for a few tight running requests
costs not only the requests queued now but the loose ones that will arrive while it is held, about as
many as arrived in as long a time just before. Pure: times are passed in; a request's targets come
from its class, so a pool has a handful of groups and every query is a few bisections.
"""

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TargetCounts:
    """How many requests with these targets arrived in a window, and how many of them arrived more than
    their TTFT target before its end (mirrored one window ahead: would expire before the window ends)."""

    ttft_s: float
    tpot_s: float
    arrived: int
    would_expire: int


@dataclass
class RecentArrivals:
    """Arrival times per (ttft_s, tpot_s), oldest first; at most about `max_per_group` of the latest are
    kept per group (a window reaching further back sees only those), and at most `max_groups` groups, the
    ones with the latest arrivals (requests may carry their own targets in headers: a client sending a
    new pair with every request must not grow the memory or the cost of a window without bound)."""

    max_per_group: int = 16384
    max_groups: int = 64
    _times: dict[tuple[float, float], list[float]] = field(default_factory=dict)

    def add(self, at_s: float, *, ttft_s: float, tpot_s: float) -> None:
        key = (ttft_s, tpot_s)
        times = self._times.pop(key, None)
        if times is None:
            times = []
            if len(self._times) >= self.max_groups:  # the group whose last arrival is oldest goes
                del self._times[next(iter(self._times))]
        self._times[key] = times  # the dict's order: groups by their last arrival, latest last
        if not times or at_s >= times[-1]:
            times.append(at_s)
        else:
            insort(times, at_s)
        if len(times) >= 2 * self.max_per_group:  # amortised: drop the older half at once
            del times[: len(times) - self.max_per_group]

    def window(self, now_s: float, window_s: float) -> Iterator[TargetCounts]:
        """Per target group, the arrivals in (now_s - window_s, now_s]."""
        start_s = now_s - window_s
        for (ttft_s, tpot_s), times in self._times.items():
            first = bisect_right(times, start_s)
            arrived = bisect_right(times, now_s) - first
            if arrived <= 0:
                continue
            expire = max(0, bisect_left(times, now_s - ttft_s) - first)
            yield TargetCounts(ttft_s, tpot_s, arrived, min(arrived, expire))
