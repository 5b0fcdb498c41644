"""Batch formation per iteration: the plug-in point (like vLLM's --scheduler-cls) and vLLM V1's own.

The engine calls `scheduler.schedule(ctx)` once per iteration with every running request materialised.
A scheduler decides which requests compute how many tokens, admits waiting requests and preempts
running ones, only through the `SchedulingContext` methods, which keep KV accounting and the queues
consistent. `VllmV1Scheduler` reproduces vLLM 0.32's `Scheduler.schedule()`, with its prefix-cache
lookup at admission when the engine caches prefixes (no speculative decoding); an engine-integrated
policy such as SCORPIO's credit-based batching replaces it (and gets no prefix hits unless it calls
`lookup` and passes the hit to `try_allocate`, as `admit_waiting` does).
The engine only fast-forwards (decode cohorts, multi-step runs) under `VllmV1Scheduler`; any other
scheduler is stepped one iteration at a time, so it is always exact.
"""

from collections.abc import Callable
from typing import Protocol

from sloguard.sim.engine.prefix_cache import PrefixCache
from sloguard.sim.engine.state import RUNNING, WAITING, SchedulingPolicy, SequenceState, WaitingQueue


class SchedulingContext:
    """The mutable view of one iteration's formation handed to a scheduler."""

    def __init__(
        self,
        *,
        running: list[SequenceState],
        waiting: WaitingQueue,
        token_budget: int,
        max_num_seqs: int,
        block_size: int,
        free_blocks: int,
        policy: SchedulingPolicy,
        chunked_prefill: bool,
        max_model_len: int,
        now_s: float,
        on_preempt: Callable[[SequenceState], None],
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        self.running = running  # vLLM's running list, in order; admitted requests are appended
        self.waiting = waiting
        self.token_budget = token_budget
        self.max_num_seqs = max_num_seqs
        self.block_size = block_size
        self.free_blocks = free_blocks
        self.policy = policy
        self.chunked_prefill = chunked_prefill
        self.max_model_len = max_model_len
        self.now_s = now_s
        self.scheduled: dict[str, tuple[SequenceState, int]] = {}
        self.preempted: list[SequenceState] = []
        self.rejected: list[SequenceState] = []
        self._on_preempt = on_preempt
        self.prefix_cache = prefix_cache

    def blocks_needed(self, seq: SequenceState, num_new_tokens: int) -> int:
        total = -(-(seq.num_computed + num_new_tokens) // self.block_size)
        return max(0, total - seq.blocks)

    def lookup(self, seq: SequenceState) -> tuple[int, int]:
        """vLLM's get_computed_blocks for a waiting request: (hit blocks, how many of them are free
        cached blocks). (0, 0) without a prefix cache or prefix information."""
        cache = self.prefix_cache
        if cache is None or seq.prefix is None or seq.num_computed:
            return 0, 0
        return cache.lookup(seq.prefix, seq.num_tokens, self.free_blocks)

    def try_allocate(
        self, seq: SequenceState, num_new_tokens: int, hit_blocks: int = 0, free_hit_blocks: int = 0
    ) -> bool:
        """vLLM's allocate_slots: all-or-nothing blocks for num_computed + num_new_tokens. With a
        prefix hit from `lookup` (a waiting request), num_new_tokens follow the hit tokens, the hit
        blocks are shared and free ones among them count against the free blocks."""
        cache = self.prefix_cache
        if hit_blocks:
            if cache is None or seq.prefix is None or seq.blocks or seq.num_computed:
                raise ValueError(
                    f"a prefix hit needs a waiting request with prefix information: {seq.request_id!r}"
                )
            hit_tokens = hit_blocks * self.block_size
            total = -(-(hit_tokens + num_new_tokens) // self.block_size)
            need = total - hit_blocks + free_hit_blocks
            if need > self.free_blocks:
                return False
            self.free_blocks -= need
            cache.touch(seq.prefix, hit_blocks)
            seq.blocks = total
            seq.num_computed = hit_tokens
        else:
            need = self.blocks_needed(seq, num_new_tokens)
            if need > self.free_blocks:
                return False
            self.free_blocks -= need
            seq.blocks += need
        if cache is not None and seq.prefix is not None:
            cache.register(seq.prefix, seq.num_computed + num_new_tokens, self.free_blocks)
        return True

    def record_admission(self, seq: SequenceState, hit_blocks: int) -> None:
        """Count an admission in the prefix-cache statistics (vLLM: at admission, never-preempted
        requests only; queries and hits in tokens) and remember the request's cached tokens."""
        cache = self.prefix_cache
        if cache is None or seq.num_preemptions:
            return
        cache.record(seq.num_tokens, hit_blocks)
        seq.cached_tokens = hit_blocks * self.block_size

    def schedule(self, seq: SequenceState, num_new_tokens: int) -> None:
        if num_new_tokens <= 0 or num_new_tokens > self.token_budget:
            raise ValueError(f"cannot schedule {num_new_tokens} tokens with budget {self.token_budget}")
        self.scheduled[seq.request_id] = (seq, num_new_tokens)
        self.token_budget -= num_new_tokens

    def unschedule(self, seq: SequenceState) -> None:
        _, n = self.scheduled.pop(seq.request_id)
        self.token_budget += n

    def preempt(self, seq: SequenceState) -> None:
        """Recompute preemption: free the blocks, reset computed tokens, back into the waiting queue."""
        self.running.remove(seq)
        if seq.request_id in self.scheduled:
            self.unschedule(seq)
        cache = self.prefix_cache
        if cache is None:
            self.free_blocks += seq.blocks
        else:
            self.free_blocks += cache.release(seq.prefix, seq.blocks, seq.num_computed, self.free_blocks)
        seq.blocks = 0
        seq.num_computed = 0
        seq.status = WAITING
        seq.num_preemptions += 1
        self.waiting.prepend(seq)
        self.preempted.append(seq)
        self._on_preempt(seq)

    def reject(self, seq: SequenceState) -> None:
        """Refuse a waiting request: it leaves the engine now with finish reason "reject" (SCORPIO's
        TTFT guard). Only requests holding no KV blocks can be refused."""
        if seq.status != WAITING or seq.blocks:
            raise ValueError(f"only a waiting request without KV blocks can be rejected: {seq.request_id!r}")
        self.waiting.remove(seq)
        self.rejected.append(seq)

    def admit(self) -> SequenceState:
        """Move the head of the waiting queue to the end of the running list."""
        seq = self.waiting.pop()
        seq.status = RUNNING
        self.running.append(seq)
        return seq


class BatchScheduler(Protocol):
    def schedule(self, ctx: SchedulingContext) -> None: ...


class VllmV1Scheduler:
    """vLLM V1's batch formation: running requests first (preempting on KV exhaustion), then, only if
    nothing was preempted, waiting requests in queue order while seats, budget and blocks last."""

    def schedule(self, ctx: SchedulingContext) -> None:
        req_index = 0
        while req_index < len(ctx.running) and ctx.token_budget > 0:
            seq = ctx.running[req_index]
            num_new = min(seq.num_tokens - seq.num_computed, ctx.token_budget)
            num_new = min(num_new, ctx.max_model_len - 1 - seq.num_computed)
            if num_new <= 0:
                req_index += 1
                continue
            scheduled_self = True
            while not ctx.try_allocate(seq, num_new):
                if ctx.policy == "priority":
                    victim = max(ctx.running, key=lambda s: (s.priority, s.arrival_s, s.arrival_seq))
                    victim_was_scheduled = victim.request_id in ctx.scheduled
                    ctx.preempt(victim)
                    if victim_was_scheduled:
                        req_index -= 1
                else:
                    victim = ctx.running[-1]
                    ctx.preempt(victim)
                if victim is seq:
                    scheduled_self = False
                    break
            if not scheduled_self:
                break
            ctx.schedule(seq, num_new)
            req_index += 1
        if not ctx.preempted:
            admit_waiting(ctx)


def admit_waiting(ctx: SchedulingContext) -> None:
    """vLLM's second phase: admit waiting requests in queue order while seats, budget and blocks last;
    stop at the first that does not fit (no skipping ahead)."""
    while len(ctx.waiting) > 0 and ctx.token_budget > 0 and len(ctx.running) < ctx.max_num_seqs:
        head = ctx.waiting.peek()
        hit_blocks, free_hit_blocks = ctx.lookup(head)
        num_new = head.num_tokens - head.num_computed - hit_blocks * ctx.block_size
        if not ctx.chunked_prefill and num_new > ctx.token_budget:
            break
        num_new = min(num_new, ctx.token_budget)
        if not ctx.try_allocate(head, num_new, hit_blocks, free_hit_blocks):
            break
        seq = ctx.admit()
        ctx.record_admission(seq, hit_blocks)
        ctx.schedule(seq, num_new)
