"""TTFT guard: a least-deadline-first queue and the pass that finds requests that can no longer make it.

SCORPIO's `_reject_ttft_unattainable` (reference/papers.md §1.4): walk the queue in LDF order adding up
the prompt tokens ahead; a request whose remaining slack is below the predicted wait at its position
plus a margin is unattainable, and it frees its place for those behind it. Policies reject such a
request or demote it to best effort, as its class says. Used by scorpio, sloguard and sa (ordering).

Cost: the queue is a sorted Python list (binary search, C-speed memmove on insert), and the pass stops
at the first request whose slack exceeds the wait predicted for the *whole* queue: no request behind it
can be unattainable, since deadlines only grow and the tokens ahead never exceed the total. So a pass
touches only the urgent head of the queue. Pure.
"""

import bisect
import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

# (deadline or other primary key, tie-break key, insertion sequence, prompt tokens, request id)
QueueItem = tuple[float, float, int, int, str, float]  # key, tie, seq, tokens, id, weight


class SortedQueue:
    """Requests ordered by (key, tie, seq): least key first; removal by id in O(log n) + memmove."""

    def __init__(self) -> None:
        self._items: list[QueueItem] = []
        self._by_id: dict[str, QueueItem] = {}
        self._seq = 0
        self.total_tokens = 0
        self.total_weight = 0.0  # sum of the items' weights (sloguard: predicted output tokens)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._by_id

    def __iter__(self) -> Iterator[QueueItem]:
        return iter(self._items)

    def push(self, request_id: str, key: float, tokens: int, tie: float = 0.0, weight: float = 0.0) -> None:
        if request_id in self._by_id:
            raise ValueError(f"request {request_id!r} is already queued")
        self._seq += 1
        item = (key, tie, self._seq, tokens, request_id, weight)
        bisect.insort(self._items, item)
        self._by_id[request_id] = item
        self.total_tokens += tokens
        self.total_weight += weight

    def remove(self, request_id: str) -> bool:
        item = self._by_id.pop(request_id, None)
        if item is None:
            return False
        index = bisect.bisect_left(self._items, item)
        del self._items[index]
        self.total_tokens -= item[3]
        self.total_weight = self.total_weight - item[5] if self._items else 0.0
        return True

    def head(self) -> QueueItem | None:
        return self._items[0] if self._items else None

    def key_of(self, request_id: str) -> float:
        return self._by_id[request_id][0]

    def ahead_of(self, key: float, tie: float = 0.0) -> tuple[int, int]:
        """(prompt tokens, requests) strictly ahead of a new item with this key: O(position)."""
        end = bisect.bisect_right(self._items, (key, tie, self._seq + 1))
        if end == len(self._items):
            return self.total_tokens, end
        return sum(item[3] for item in self._items[:end]), end

    def weight_ahead_of(self, key: float, tie: float = 0.0) -> float:
        """Sum of the weights strictly ahead of a new item with this key: O(position)."""
        end = bisect.bisect_right(self._items, (key, tie, self._seq + 1))
        return self.total_weight if end == len(self._items) else sum(item[5] for item in self._items[:end])


WaitModel = Callable[[float, int, float], float]
"""Predicted wait (s) of a request with this many prompt tokens ahead (itself included), this many
requests ahead (itself included) and this much item weight ahead (itself included; sloguard weighs
items by predicted output tokens); must be non-decreasing in all three."""


def unattainable(
    queue: SortedQueue,
    *,
    now_s: float,
    base_tokens: float,
    wait_s: WaitModel,
    margin_s: float,
) -> list[str]:
    """Ids of queued requests whose slack (key - now) is below their predicted wait plus the margin.

    `base_tokens`: prompt tokens already ahead of the whole queue (released, not yet prefilled).
    """
    if not queue:
        return []
    bound_s = wait_s(base_tokens + queue.total_tokens, len(queue), queue.total_weight) + margin_s
    out: list[str] = []
    cum_tokens = base_tokens
    cum_weight = 0.0
    count = 0
    for key, _tie, _seq, tokens, request_id, weight in queue:
        slack_s = key - now_s
        if slack_s >= bound_s:
            break
        cum_tokens += tokens
        cum_weight += weight
        count += 1
        if slack_s < wait_s(cum_tokens, count, cum_weight) + margin_s:
            out.append(request_id)
            cum_tokens -= tokens  # a rejected request frees its place in line
            cum_weight -= weight
            count -= 1
    return out


def next_expiry_s(
    queue: SortedQueue,
    *,
    base_tokens: float,
    wait_s: WaitModel,
    margin_s: float,
) -> float | None:
    """The earliest time a queued request becomes unattainable if nothing else happens; None if empty.

    Request k expires at `key_k - wait(cum_k) - margin`. The walk stops once `key - wait(whole queue)`
    exceeds the minimum found: every later request expires no earlier.
    """
    if not queue:
        return None
    bound_s = wait_s(base_tokens + queue.total_tokens, len(queue), queue.total_weight) + margin_s
    earliest = float("inf")
    cum_tokens = base_tokens
    cum_weight = 0.0
    for count, (key, _tie, _seq, tokens, _request_id, weight) in enumerate(queue, start=1):
        if key - bound_s >= earliest:
            break
        cum_tokens += tokens
        cum_weight += weight
        earliest = min(earliest, key - wait_s(cum_tokens, count, cum_weight) - margin_s)
    return earliest


@dataclass(frozen=True, slots=True)
class Sweep:
    """One walk of the queue: the unattainable ids, and when the next one would expire.

    `next_expiry_s` is a lower bound on when any remaining request becomes unattainable, valid while
    no wait grows; `last_scanned_key` and `frontier_key` (the first key not walked, inf if none) let a
    caller tell whether a later insertion can move that bound (see `insertion_is_harmless`).
    """

    unattainable: tuple[str, ...]
    next_expiry_s: float
    last_scanned_key: float
    frontier_key: float


def sweep(
    queue: SortedQueue,
    *,
    now_s: float,
    base_tokens: float,
    wait_s: WaitModel,
    margin_s: float,
    drop_largest: bool = False,
) -> Sweep:
    """`unattainable` and `next_expiry_s` in one walk (the walk stops where neither can change).

    The walk is in deadline order. Where a request's wait puts it past its deadline, the plain walk gives
    that request up. With `drop_largest` it gives up the largest of the requests walked and kept so far,
    that one included, until the late one is on time or is itself given up: Moore and Hodgson's rule,
    which meets the most deadlines on one machine (1||sum U_j). A request's size is what it adds to the
    wait of the requests behind it where the walk met it (`wait_s` with it less `wait_s` without it: its
    prefill, and its slot where the slots are full). One long prompt, or one long output on a full engine,
    with an early deadline then no longer pushes several short ones behind it past theirs.
    """
    inf = float("inf")
    if not queue:
        return Sweep((), inf, -inf, inf)
    bound_s = wait_s(base_tokens + queue.total_tokens, len(queue), queue.total_weight) + margin_s
    out: list[str] = []
    earliest = inf
    cum_tokens = base_tokens
    cum_weight = 0.0
    count = 0
    last_key = -inf
    frontier = inf
    # The requests the walk may give up for a late one, a max-heap by size and, among equal ones, the later
    # in the walk first (a tie gives up the late one): (-size, -index, id, weight, tokens). With
    # `drop_largest` every walked request still kept; in the plain walk only the late one itself.
    kept: list[tuple[float, int, str, float, float]] = []
    for index, (key, _tie, _seq, tokens, request_id, weight) in enumerate(queue):
        if key - bound_s >= max(earliest, now_s):
            frontier = key
            break
        last_key = key
        cum_tokens += tokens
        cum_weight += weight
        count += 1
        waited_s = wait_s(cum_tokens, count, cum_weight)
        expiry = key - waited_s - margin_s
        size = 0.0
        if drop_largest:  # what it adds to the wait of every request behind it: its prefill, its slot
            size = waited_s - wait_s(cum_tokens - tokens, count - 1, cum_weight - weight)
        else:
            kept.clear()
        heapq.heappush(kept, (-size, -index, request_id, weight, float(tokens)))
        while expiry < now_s:
            _size, _index, dropped, dropped_weight, dropped_tokens = heapq.heappop(kept)
            out.append(dropped)
            cum_tokens -= dropped_tokens  # a rejected request frees its place in line
            cum_weight -= dropped_weight
            count -= 1
            if dropped == request_id:
                break
            expiry = key - wait_s(cum_tokens, count, cum_weight) - margin_s
        else:
            earliest = min(earliest, expiry)
    return Sweep(tuple(out), earliest, last_key, frontier)


def insertion_is_harmless(
    previous: Sweep,
    *,
    key: float,
    total_tokens: float,
    count: int,
    wait_s: WaitModel,
    margin_s: float,
    total_weight: float = 0.0,
) -> bool:
    """Whether inserting an item with `key` leaves `previous.next_expiry_s` a valid lower bound.

    True when the item sorts behind every walked request (so none of their waits grow) and neither
    it nor any unwalked request can expire before the bound, given the new queue totals.
    """
    if key < previous.last_scanned_key:
        return False
    bound = wait_s(total_tokens, count, total_weight)
    return min(key, previous.frontier_key) - bound - margin_s >= previous.next_expiry_s


@dataclass(slots=True)
class KeepingUp:
    """Whether the engine demonstrably keeps up: most recent first tokens came within their TTFT targets,
    for every SLO class that has recent first tokens.

    An exponential average (weight `weight`) of on-time first tokens (1) and late ones (0), judged only
    after `min_observations`, over all first tokens and separately per SLO class (by name: as many as the
    configuration has classes, whatever targets requests override). While each is at least `threshold`,
    the latency model predicts waits optimistically (sidecar/core/latency.py: the low quantile of its
    prefill correction instead of its running level), so the TTFT guard does not turn away requests an
    engine that keeps up would serve (issue 16: below saturation the sidecar must do no harm). Once first
    tokens come late, the guard goes back to its running estimate (or a high quantile, where the latency
    model is `cautious_when_behind`). Pure.

    `threshold` 0.5, "most first tokens on time": measured in front of real vLLM on a 2-core machine at half
    the knee, where vLLM alone met 65-73 % of the requests, the tight class's first tokens came late often
    enough (host stalls, vLLM's API server answering headers in 20 ms at p50 but 1 s at p99) that the
    on-time share stayed below 0.8, the guard never turned optimistic, and it refused 25-35 % of the
    requests, most of the tight class, where pass-through served them. The switch regulates itself: once
    admitting optimistically makes most first tokens late, the running estimate is back.

    Per class as well as over all: classes' targets differ by 10-100x, so a loose class is on time
    whatever the engine does, and its first tokens kept the share over all above one half while the class
    the guard was getting wrong came late. Measured in front of real vLLM at 2x the knee (a quick run of
    `sloguard bench real-vllm`, 01:31 UTC, one 15 s run): the standard class had 522 requests on time and
    1,014 with a late first token, the batch class 933 and 36, the share over the run 0.58; the guard
    stayed optimistic and went on admitting standard requests that came late. A class whose recent first
    tokens are mostly late turns the guard back to its running estimate.
    """

    weight: float = 0.1
    threshold: float = 0.5
    min_observations: int = 8
    on_time_share: float = 0.0
    observations: int = 0
    by_class: dict[str, tuple[float, int]] = field(default_factory=dict)
    """SLO class -> (its on-time share, its observations)."""
    _keeping_up: bool = field(default=False, init=False, repr=False)  # `keeping_up`, set by `observe`

    def __post_init__(self) -> None:
        self._keeping_up = self._judge()

    def _averaged(self, share: float, count: int, on_time: bool) -> tuple[float, int]:
        w = max(self.weight, 1.0 / (count + 1))
        return share + w * ((1.0 if on_time else 0.0) - share), count + 1

    def observe(self, on_time: bool, slo_class: str | None = None) -> None:
        """One first token, on time or late, of `slo_class` (None: counted over all only)."""
        self.on_time_share, self.observations = self._averaged(self.on_time_share, self.observations, on_time)
        if slo_class is not None:
            share, count = self.by_class.get(slo_class, (0.0, 0))
            self.by_class[slo_class] = self._averaged(share, count, on_time)
        self._keeping_up = self._judge()

    @property
    def keeping_up(self) -> bool:
        """Judged once per first token (`observe`): every wait the guards predict reads it."""
        return self._keeping_up

    def _judge(self) -> bool:
        if self.observations < self.min_observations or self.on_time_share < self.threshold:
            return False
        return all(
            share >= self.threshold
            for share, count in self.by_class.values()
            if count >= self.min_observations
        )
