"""Per-request engine state (`SequenceState`) and the waiting queues (FIFO, or (priority, arrival) heap).

Used by the engine and by batch schedulers (`sloguard.sim.engine.scheduler`). A scheduler reads these
fields but changes them only through its `SchedulingContext`.
"""

import heapq
from collections import deque
from collections.abc import Callable, Iterator
from typing import Literal

from sloguard.sim.engine.prefix_cache import SeqPrefix
from sloguard.sim.engine.request import FinishReason, SimRequest

SchedulingPolicy = Literal["fcfs", "priority"]

WAITING, RUNNING, FINISHED = 0, 1, 2


class SequenceState:
    """One request inside the engine. Token counts follow vLLM V1: `num_tokens` = prompt + output, a
    token is sampled whenever `num_computed` reaches `num_tokens`, preemption resets `num_computed`.

    Members of the engine's decode cohort keep `num_computed`/`num_output` lazily (as `base`/`obase`
    plus the global step count); the engine materialises them before anyone else looks.
    """

    __slots__ = (
        "arrival_s",
        "arrival_seq",
        "base",
        "blocks",
        "cached_tokens",
        "finish_reason",
        "finish_s",
        "first_scheduled_s",
        "first_token_s",
        "in_cohort",
        "num_computed",
        "num_output",
        "num_preemptions",
        "obase",
        "prefix",
        "priority",
        "prompt_tokens",
        "ranges",
        "request",
        "request_id",
        "status",
        "target_output",
    )

    request: SimRequest
    request_id: str
    priority: int
    prompt_tokens: int
    arrival_s: float
    arrival_seq: int
    target_output: int
    finish_reason: FinishReason
    num_computed: int
    num_output: int
    blocks: int
    status: int
    num_preemptions: int
    ranges: list[list[int]]
    first_scheduled_s: float | None
    first_token_s: float | None
    finish_s: float | None
    in_cohort: bool
    base: int
    obase: int
    prefix: SeqPrefix | None  # prefix-cache naming and held blocks; None = takes no part
    cached_tokens: (
        int  # prompt tokens found in the prefix cache at first admission (vLLM's num_cached_tokens)
    )

    def __init__(
        self, request: SimRequest, arrival_s: float, arrival_seq: int, target: int, reason: FinishReason
    ) -> None:
        self.request = request
        self.request_id = request.request_id
        self.priority = request.priority
        self.prompt_tokens = request.prompt_tokens
        self.arrival_s = arrival_s
        self.arrival_seq = arrival_seq
        self.target_output = target
        self.finish_reason = reason
        self.num_computed = 0
        self.num_output = 0
        self.blocks = 0
        self.status = WAITING
        self.num_preemptions = 0
        self.ranges = []  # [first_step, end_step) of emitted tokens; end -1 = open (cohort)
        self.first_scheduled_s = None
        self.first_token_s = None
        self.finish_s = None
        self.in_cohort = False
        self.base = 0
        self.obase = 0
        self.prefix = None
        self.cached_tokens = 0

    @property
    def num_tokens(self) -> int:
        return self.prompt_tokens + self.num_output

    def sort_key(self) -> tuple[int, float, int]:
        """vLLM's priority order: (priority, arrival_time); the arrival sequence breaks exact ties."""
        return (self.priority, self.arrival_s, self.arrival_seq)


class WaitingQueue:
    """vLLM's waiting queue: FIFO under fcfs (preempted requests go back to the front), a heap on
    (priority, arrival) under priority (preempted requests re-enter by their key)."""

    def __init__(self, policy: SchedulingPolicy) -> None:
        self.policy = policy
        self._fifo: deque[SequenceState] = deque()
        self._heap: list[tuple[tuple[int, float, int], SequenceState]] = []

    def __len__(self) -> int:
        return len(self._fifo) if self.policy == "fcfs" else len(self._heap)

    def __iter__(self) -> Iterator[SequenceState]:
        if self.policy == "fcfs":
            return iter(list(self._fifo))
        return iter([s for _, s in sorted(self._heap, key=lambda e: e[0])])

    def add(self, seq: SequenceState) -> None:
        if self.policy == "fcfs":
            self._fifo.append(seq)
        else:
            heapq.heappush(self._heap, (seq.sort_key(), seq))

    def prepend(self, seq: SequenceState) -> None:
        if self.policy == "fcfs":
            self._fifo.appendleft(seq)
        else:
            heapq.heappush(self._heap, (seq.sort_key(), seq))

    def peek(self) -> SequenceState:
        return self._fifo[0] if self.policy == "fcfs" else self._heap[0][1]

    def pop(self) -> SequenceState:
        return self._fifo.popleft() if self.policy == "fcfs" else heapq.heappop(self._heap)[1]

    def reorder(self, key: Callable[[SequenceState], tuple[float, ...]]) -> None:
        """Re-sort a FIFO queue by `key` (stable), as an engine-integrated policy (SCORPIO's LDF) does."""
        if self.policy != "fcfs":
            raise ValueError("only a FIFO waiting queue can be reordered; the priority heap orders itself")
        self._fifo = deque(sorted(self._fifo, key=key))

    def remove(self, seq: SequenceState) -> None:
        if self.policy == "fcfs":
            self._fifo.remove(seq)
        else:
            self._heap = [e for e in self._heap if e[1] is not seq]
            heapq.heapify(self._heap)
