"""The virtual-time engine: iteration-level continuous batching over a paged KV cache (vLLM V1).

Called by the HTTP server (`sloguard.sim.server`), the benchmarks and the cluster simulation; see the
package docstring for the API. Time only moves through `advance_to(t_s)`; nothing reads a clock.

How it is fast and still exact. Running requests that only decode (one token per iteration) form a
*cohort* kept lazily: their token counts are `base + steps_done`, their KV block needs come from a
count per residue of `base` modulo the block size, their finishes from a heap. An iteration whose
running requests all get their full need without preemption (the usual case) is then formed in
O(prefills) instead of O(batch). A run of identical decode-only iterations (nobody admissible, no
finish, enough free blocks, all ending by the horizon) is completed at once with numpy: the step times
and their running sum are the same float operations, in the same order, as stepping one by one. Any
other iteration (KV exhaustion, a custom scheduler, `fast=False`) is formed by the scheduler over fully
materialised state; tests compare both paths on random workloads for bit-identical results.
"""

import heapq
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from sloguard.sim.engine.events import EngineEvent, EngineSnapshot, Finished, FirstToken, Preempted
from sloguard.sim.engine.prefix_cache import PrefixCache, SeqPrefix, chain_hashes, token_block_hashes
from sloguard.sim.engine.request import SimRequest, resolve_output_length
from sloguard.sim.engine.scheduler import BatchScheduler, SchedulingContext, VllmV1Scheduler, admit_waiting
from sloguard.sim.engine.state import (
    FINISHED,
    RUNNING,
    WAITING,
    SchedulingPolicy,
    SequenceState,
    WaitingQueue,
)
from sloguard.sim.engine.step_time import BatchShape, StepTimeModel

_MAX_RUN_STEPS = 1 << 16


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """vLLM's scheduler and cache knobs. `num_gpu_blocks` includes vLLM's reserved null block.
    `prefix_caching`: vLLM's automatic prefix caching (on by default, as in vLLM); only requests that
    carry prefix information use it (see `sloguard.sim.engine.prefix_cache`)."""

    num_gpu_blocks: int
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int = 8192
    scheduling_policy: SchedulingPolicy = "fcfs"
    enable_chunked_prefill: bool = True
    seed: int = 0
    mean_output_tokens: float = 256.0  # mean of the seeded EOS draw when a request has no length
    prefix_caching: bool = True

    def __post_init__(self) -> None:
        if self.num_gpu_blocks < 2 or self.block_size < 1 or self.max_num_seqs < 1:
            raise ValueError("need num_gpu_blocks >= 2, block_size >= 1, max_num_seqs >= 1")
        if self.max_num_batched_tokens < 1:
            raise ValueError("max_num_batched_tokens must be >= 1")
        if self.max_model_len > (self.num_gpu_blocks - 1) * self.block_size:
            raise ValueError(  # vLLM refuses to start in this case too
                f"max_model_len {self.max_model_len} does not fit the KV cache of "
                f"{(self.num_gpu_blocks - 1) * self.block_size} tokens "
                f"({self.num_gpu_blocks} blocks minus the null block)"
            )
        if not self.enable_chunked_prefill and self.max_num_batched_tokens < self.max_model_len:
            raise ValueError(  # as vLLM: otherwise a long prompt could never be scheduled
                f"max_num_batched_tokens {self.max_num_batched_tokens} is smaller than max_model_len "
                f"{self.max_model_len} and chunked prefill is disabled"
            )
        if self.scheduling_policy not in ("fcfs", "priority"):
            raise ValueError(f"unknown scheduling policy {self.scheduling_policy!r}")


@dataclass(slots=True)
class _Step:
    index: int
    start_s: float
    end_s: float
    scheduled: list[tuple[SequenceState, int]]  # materialised requests and their new tokens
    cohort: bool  # whether the lazy decode cohort takes part (one token each)
    num_tokens: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Engine:
    """One simulated vLLM engine (one model replica)."""

    def __init__(
        self,
        config: EngineConfig,
        step_time: StepTimeModel,
        *,
        scheduler: BatchScheduler | None = None,
        fast: bool = True,
        start_s: float = 0.0,
    ) -> None:
        self.config = config
        self.step_time = step_time
        self.scheduler: BatchScheduler = scheduler if scheduler is not None else VllmV1Scheduler()
        self.fast = fast and type(self.scheduler) is VllmV1Scheduler
        self.now_s = start_s
        self.usable_blocks = config.num_gpu_blocks - 1
        self.blocks_used = 0
        self.num_preemptions_total = 0
        self.iteration_token_counts: dict[int, int] = {}  # tokens in an iteration -> how many iterations
        self.waiting = WaitingQueue(config.scheduling_policy)
        self.running: dict[str, SequenceState] = {}  # vLLM's running list, in order
        self._prefilling: dict[str, SequenceState] = {}  # running, materialised (fast mode only)
        self._seqs: dict[str, SequenceState] = {}
        self._arrivals = 0
        self._steps_done = 0
        self._step_end = np.empty(1024, dtype=np.float64)
        self._inflight: _Step | None = None
        self._pending_form_s: float | None = None
        self._waiting_dirty = False
        # the decode cohort
        self._bs = config.block_size
        self._cohort_n = 0
        self._cohort_sum_base = 0
        self._residue = [0] * config.block_size
        self._finish_heap: list[tuple[int, int, SequenceState]] = []
        self._events: list[EngineEvent] = []
        self.prefix_cache = PrefixCache(config.block_size) if config.prefix_caching else None

    # ----------------------------------------------------------------------------------- public API
    def submit(self, request: SimRequest, now_s: float) -> None:
        """Queue a request that arrived at `now_s` (>= the engine's time). Its id must be new.
        Iterations ending before `now_s` complete first; their events come with the next advance_to."""
        if now_s < self.now_s:
            raise ValueError(f"submit at {now_s} is before the engine's time {self.now_s}")
        if request.request_id in self._seqs:
            raise ValueError(f"duplicate request id {request.request_id!r}")
        if request.prompt_tokens + 1 > self.config.max_model_len:
            raise ValueError(f"prompt of {request.prompt_tokens} tokens exceeds max_model_len")
        self._advance(now_s)
        target, reason = resolve_output_length(
            request, seed=self.config.seed, mean_tokens=self.config.mean_output_tokens
        )
        cap = self.config.max_model_len - request.prompt_tokens
        if target > cap:
            target, reason = cap, "length"
        seq = SequenceState(request, now_s, self._arrivals, target, reason)
        if self.prefix_cache is not None:
            seq.prefix = self._seq_prefix(request, self._arrivals)
        self._arrivals += 1
        self._seqs[request.request_id] = seq
        self.waiting.add(seq)
        self._waiting_dirty = True
        if self._inflight is None and self._pending_form_s is None:
            self._pending_form_s = now_s

    def abort(self, request_id: str, now_s: float) -> Finished | None:
        """Remove a waiting or running request now, freeing its blocks. None if it is not (or no longer)
        in the engine. Its Finished event (reason "abort") is returned, not queued."""
        self._advance(max(self.now_s, now_s))
        seq = self._seqs.get(request_id)
        if seq is None or seq.status == FINISHED:
            return None
        if seq.status == WAITING:
            self.waiting.remove(seq)
        else:
            self._materialise(seq)
            self._free_blocks(seq)
            del self.running[request_id]
            self._prefilling.pop(request_id, None)
        seq.finish_reason = "abort"
        self._waiting_dirty = True
        return self._finish(seq, self.now_s, emit=False)

    def next_event_time_s(self) -> float | None:
        """When the iteration in flight ends (its tokens appear then); None when the engine is idle.
        Events not yet collected (a scheduler's rejections at formation, iterations completed by
        submit/abort) make it the time of the first of them, or now if that has passed."""
        self._form_pending()
        if self._inflight is not None:
            return self._inflight.end_s
        # an idle engine holding uncollected events (a scheduler rejected all it had) reports their
        # time (or now, if that has passed) so that a driver collects them
        return max(self._events[0].time_s, self.now_s) if self._events else None

    def advance_to(self, t_s: float) -> list[EngineEvent]:
        """Complete every iteration that ends at or before `t_s`; return what happened, in time order
        (including events of iterations that `submit`/`abort` completed on their way to their time).
        An iteration formed at time x includes every request submitted at a time <= x."""
        self._advance(t_s)
        events, self._events = self._events, []
        return events

    def _advance(self, t_s: float) -> None:
        if t_s < self.now_s:
            raise ValueError(f"cannot go back from {self.now_s} to {t_s}")
        self._form_pending(before_s=t_s)
        while self._inflight is not None and self._inflight.end_s <= t_s:
            step = self._inflight
            self._inflight = None
            if self.fast and not step.scheduled and step.cohort and not self._waiting_dirty:
                self._run_decodes(step, t_s)
            else:
                self._complete(step)
            end = self._step_end[self._steps_done - 1]
            if end < t_s:
                self._form(float(end))
            else:
                self._pending_form_s = float(end)
        self.now_s = t_s

    def run_until_idle(self) -> list[EngineEvent]:
        events: list[EngineEvent] = []
        while (t := self.next_event_time_s()) is not None:
            events += self.advance_to(t)
        return events

    def snapshot(self) -> EngineSnapshot:
        cache = self.prefix_cache
        return EngineSnapshot(
            now_s=self.now_s,
            running=len(self.running),
            waiting=len(self.waiting),
            kv_blocks_used=self.blocks_used,
            kv_blocks_total=self.usable_blocks,
            num_preemptions_total=self.num_preemptions_total,
            steps=self._steps_done,
            prefix_cache_queries_tokens=cache.queries_tokens if cache is not None else 0,
            prefix_cache_hits_tokens=cache.hits_tokens if cache is not None else 0,
        )

    def output_tokens(self, request_id: str) -> int:
        """Tokens generated so far by a request still in the engine."""
        seq = self._seqs[request_id]
        return int(seq.obase + self._steps_done) if seq.in_cohort else int(seq.num_output)

    def token_times_s(self, request_id: str) -> npt.NDArray[np.float64]:
        """Generation times of the tokens produced so far by a request still in the engine."""
        return self._token_times(self._seqs[request_id])

    def has_request(self, request_id: str) -> bool:
        seq = self._seqs.get(request_id)
        return seq is not None and seq.status != FINISHED

    # ------------------------------------------------------------------------------------- internals
    def _seq_prefix(self, request: SimRequest, uid: int) -> SeqPrefix | None:
        bs = self._bs
        if request.prefix_hashes is not None:
            hashes, hash_block_tokens = list(request.prefix_hashes), request.prefix_block_tokens
        elif request.prompt_token_ids is not None:
            hashes, hash_block_tokens = token_block_hashes(request.prompt_token_ids, bs), bs
        else:
            return None
        return SeqPrefix(chain_hashes(hashes), hash_block_tokens, request.prompt_tokens, bs, uid)

    def _free_blocks(self, seq: SequenceState) -> None:
        """Give a materialised request's blocks back (to the prefix cache's LRU where they stay cached)."""
        cache = self.prefix_cache
        if cache is None or (seq.prefix is None and not cache.lru):
            self.blocks_used -= seq.blocks
        else:
            free = self.usable_blocks - self.blocks_used
            self.blocks_used -= cache.release(seq.prefix, seq.blocks, seq.num_computed, free)
        seq.blocks = 0

    def _token_times(self, seq: SequenceState) -> npt.NDArray[np.float64]:
        parts = [self._step_end[a : (self._steps_done if b < 0 else b)] for a, b in seq.ranges]
        if not parts:
            return np.empty(0, dtype=np.float64)
        return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()

    def _form_pending(self, before_s: float | None = None) -> None:
        """Form the iteration due at the pending time (only if that is before `before_s`, when given:
        requests submitted at exactly that time still join it)."""
        pending = self._pending_form_s
        if pending is not None and self._inflight is None and (before_s is None or pending < before_s):
            self._pending_form_s = None
            self._form(pending)

    def _record_step_end(self, index: int, end_s: float) -> None:
        if index >= len(self._step_end):
            grown = np.empty(max(2 * len(self._step_end), index + 1), dtype=np.float64)
            grown[: len(self._step_end)] = self._step_end
            self._step_end = grown
        self._step_end[index] = end_s

    # cohort bookkeeping ---------------------------------------------------------------------------
    def _join_cohort(self, seq: SequenceState) -> None:
        """After a completed step: seq needs one token per iteration from now on."""
        s = self._steps_done
        seq.in_cohort = True
        seq.base = seq.num_computed - s
        seq.obase = seq.num_output - s
        self._cohort_n += 1
        self._cohort_sum_base += seq.base
        self._residue[(-seq.base) % self._bs] += 1
        seq.ranges[-1][1] = -1  # the token just emitted at step s - 1 opens the cohort range
        heapq.heappush(self._finish_heap, (seq.target_output - 1 - seq.obase, seq.arrival_seq, seq))

    def _materialise(self, seq: SequenceState) -> None:
        """Leave the cohort: make counts, blocks and ranges explicit (at the current step count)."""
        if not seq.in_cohort:
            return
        s = self._steps_done
        seq.in_cohort = False
        seq.num_computed = seq.base + s
        seq.num_output = seq.obase + s
        inflight = self._inflight is not None and self._inflight.cohort
        seq.blocks = -(-(seq.num_computed + (1 if inflight else 0)) // self._bs)
        self._cohort_n -= 1
        self._cohort_sum_base -= seq.base
        self._residue[(-seq.base) % self._bs] -= 1
        seq.ranges[-1][1] = s
        # its finish-heap entry goes stale: it is skipped because in_cohort is false

    def _dissolve_cohort(self) -> None:
        for seq in self.running.values():
            if seq.in_cohort:
                self._materialise(seq)
                self._prefilling[seq.request_id] = seq
        self._finish_heap.clear()

    # formation ------------------------------------------------------------------------------------
    def _form(self, t_s: float) -> None:
        if not self.running and len(self.waiting) == 0:
            return
        self._waiting_dirty = False
        step = self._form_cohort(t_s) if self.fast and self._cohort_n > 0 else None
        while step is None and (self.running or len(self.waiting)):
            # vLLM forms an empty iteration when everything scheduled was preempted; the next one
            # (at the same instant) admits from the waiting queue
            step = self._form_materialised(t_s)
        self._inflight = step

    def _form_cohort(self, t_s: float) -> _Step | None:
        """The common case: every running request gets its full need without preemption."""
        cfg = self.config
        s = self._steps_done
        n = self._cohort_n
        budget = cfg.max_num_batched_tokens - n
        cohort_blocks = self._residue[s % self._bs]
        free = self.usable_blocks - self.blocks_used - cohort_blocks
        if budget < 0 or free < 0:
            return None
        plan: list[tuple[SequenceState, int, int]] = []
        for seq in self._prefilling.values():
            need = seq.num_tokens - seq.num_computed
            need = min(need, cfg.max_model_len - 1 - seq.num_computed)
            blocks = max(0, -(-(seq.num_computed + need) // self._bs) - seq.blocks)
            budget -= need
            free -= blocks
            if budget < 0 or free < 0:
                return None
            plan.append((seq, need, blocks))
        self.blocks_used += cohort_blocks
        scheduled: list[tuple[SequenceState, int]] = []
        cache = self.prefix_cache
        for seq, need, blocks in plan:
            seq.blocks += blocks
            self.blocks_used += blocks
            scheduled.append((seq, need))
            if cache is not None and seq.prefix is not None:
                cache.register(seq.prefix, seq.num_computed + need, self.usable_blocks - self.blocks_used)
        if len(self.waiting) and budget > 0 and len(self.running) < cfg.max_num_seqs:
            running = list(self.running.values())  # only the length and the appends matter here
            ctx = self._context(running, budget, free, t_s)
            admit_waiting(ctx)
            for seq, num_new in ctx.scheduled.values():
                self._on_admit(seq, t_s)
                scheduled.append((seq, num_new))
            self.blocks_used = self.usable_blocks - ctx.free_blocks
        return self._make_step(t_s, scheduled, cohort=True)

    def _on_admit(self, seq: SequenceState, t_s: float) -> None:
        self.running[seq.request_id] = seq
        if self.fast:
            self._prefilling[seq.request_id] = seq
        if seq.first_scheduled_s is None:
            seq.first_scheduled_s = t_s

    def _context(self, running: list[SequenceState], budget: int, free: int, t_s: float) -> SchedulingContext:
        cfg = self.config
        return SchedulingContext(
            running=running,
            waiting=self.waiting,
            token_budget=budget,
            max_num_seqs=cfg.max_num_seqs,
            block_size=cfg.block_size,
            free_blocks=free,
            policy=cfg.scheduling_policy,
            chunked_prefill=cfg.enable_chunked_prefill,
            max_model_len=cfg.max_model_len,
            now_s=t_s,
            on_preempt=lambda seq: self._events.append(Preempted(seq.request_id, t_s)),
            prefix_cache=self.prefix_cache,
        )

    def _form_materialised(self, t_s: float) -> _Step | None:
        if self._cohort_n:
            self._dissolve_cohort()
        running = list(self.running.values())
        before = set(self.running)
        ctx = self._context(
            running, self.config.max_num_batched_tokens, self.usable_blocks - self.blocks_used, t_s
        )
        self.scheduler.schedule(ctx)
        for seq in ctx.rejected:
            seq.finish_reason = "reject"
            self._finish(seq, t_s, emit=True)
        self.num_preemptions_total += len(ctx.preempted)
        self.running = {seq.request_id: seq for seq in ctx.running}
        self._prefilling = dict(self.running) if self.fast else {}
        for seq in ctx.running:
            if seq.request_id not in before:
                self._on_admit(seq, t_s)
        self.blocks_used = self.usable_blocks - ctx.free_blocks
        scheduled = list(ctx.scheduled.values())
        if not scheduled:
            if not ctx.preempted and not ctx.rejected and (self.running or len(self.waiting)):
                raise RuntimeError("the scheduler made no progress: nothing fits the KV cache or budget")
            return None
        return self._make_step(t_s, scheduled, cohort=False)

    def _make_step(self, t_s: float, scheduled: list[tuple[SequenceState, int]], *, cohort: bool) -> _Step:
        s = self._steps_done
        n = self._cohort_n if cohort else 0
        decode_seqs, decode_kv = n, (self._cohort_sum_base + n * (s + 1)) if n else 0
        chunks: list[tuple[int, int]] = []
        for seq, num_new in scheduled:
            if num_new == 1 and seq.num_computed + 1 == seq.num_tokens and seq.num_output > 0:
                decode_seqs += 1
                decode_kv += seq.num_computed + 1
            else:
                chunks.append((num_new, seq.num_computed))
        shape = BatchShape(decode_seqs=decode_seqs, decode_kv_tokens=decode_kv, prefill_chunks=chunks)
        dt = self.step_time.step_s(shape)
        num_tokens = shape.num_tokens
        self.iteration_token_counts[num_tokens] = self.iteration_token_counts.get(num_tokens, 0) + 1
        return _Step(s, t_s, t_s + dt, scheduled, cohort and n > 0, num_tokens)

    # completion -----------------------------------------------------------------------------------
    def _complete(self, step: _Step) -> None:
        s = step.index
        end = step.end_s
        self._record_step_end(s, end)
        self._steps_done = s + 1
        for seq, num_new in step.scheduled:
            if seq.status != RUNNING:
                continue  # aborted while the step was in flight
            seq.num_computed += num_new
            if seq.num_computed < seq.num_tokens:
                continue
            seq.num_output += 1
            if seq.ranges and seq.ranges[-1][1] == s:
                seq.ranges[-1][1] = s + 1
            else:
                seq.ranges.append([s, s + 1])
            if seq.num_output == 1:
                seq.first_token_s = end
                self._events.append(FirstToken(seq.request_id, end, seq.cached_tokens))
            if seq.num_output >= seq.target_output:
                self._release(seq, end)
            elif self.fast:
                del self._prefilling[seq.request_id]
                self._join_cohort(seq)
        if step.cohort:
            self._finish_cohort_members(s, end)

    def _finish_cohort_members(self, s: int, end: float) -> None:
        heap = self._finish_heap
        while heap and heap[0][0] <= s:
            _, _, seq = heapq.heappop(heap)
            if seq.in_cohort and seq.status == RUNNING:
                self._materialise(seq)
                self._release(seq, end)

    def _release(self, seq: SequenceState, end: float) -> None:
        self._free_blocks(seq)
        del self.running[seq.request_id]
        self._prefilling.pop(seq.request_id, None)
        self._waiting_dirty = True
        self._finish(seq, end, emit=True)

    def _finish(self, seq: SequenceState, t_s: float, *, emit: bool) -> Finished:
        seq.status = FINISHED
        seq.finish_s = t_s
        event = Finished(
            request_id=seq.request_id,
            time_s=t_s,
            finish_reason=seq.finish_reason,
            prompt_tokens=seq.prompt_tokens,
            output_tokens=seq.num_output,
            token_times_s=self._token_times(seq),
            arrival_s=seq.arrival_s,
            first_scheduled_s=seq.first_scheduled_s,
            num_preemptions=seq.num_preemptions,
        )
        del self._seqs[seq.request_id]
        if emit:
            self._events.append(event)
        return event

    def _next_cohort_finish(self) -> int:
        heap = self._finish_heap
        while heap and not (heap[0][2].in_cohort and heap[0][2].status == RUNNING):
            heapq.heappop(heap)
        return heap[0][0] if heap else self._steps_done + _MAX_RUN_STEPS

    def _run_decodes(self, step: _Step, t_s: float) -> None:
        """Complete the in-flight decode-only iteration and as many identical ones as end by t_s."""
        s = step.index
        n = self._cohort_n
        bs = self._bs
        if n == 0:
            self._complete(step)
            return
        # iterations s+1 .. s+m: no finish before the last, blocks suffice, all end by t_s
        m = min(self._next_cohort_finish() - s, _MAX_RUN_STEPS)
        free = self.usable_blocks - self.blocks_used
        rot = np.array([self._residue[(s + 1 + j) % bs] for j in range(bs)], dtype=np.int64)
        cum = np.cumsum(rot)
        full_cycles = free // n
        m = min(m, full_cycles * bs + int(np.searchsorted(cum, free - full_cycles * n, side="right")))
        if m > 0:
            first_dt = self.step_time.decode_run_s(n, np.array([self._cohort_sum_base + n * (s + 2)]))[0]
            if first_dt > 0 and t_s != float("inf"):
                m = min(m, int((t_s - step.end_s) / first_dt) + 2)
        if m <= 0:
            self._complete(step)
            return
        idx = np.arange(s + 1, s + 1 + m, dtype=np.int64)
        kv = self._cohort_sum_base + n * (idx + 1)
        dts = self.step_time.decode_run_s(n, kv)
        ends = np.cumsum(np.concatenate(([step.end_s], dts)))
        m = min(m, int(np.searchsorted(ends, t_s, side="right")) - 1)
        if m <= 0:
            self._complete(step)
            return
        needed = (m // bs) * n + (int(cum[m % bs - 1]) if m % bs else 0)
        self.blocks_used += needed
        total = s + 1 + m
        if total > len(self._step_end):
            self._record_step_end(total - 1, 0.0)
        self._step_end[s:total] = ends[: m + 1]
        self._steps_done = total
        self.iteration_token_counts[n] = self.iteration_token_counts.get(n, 0) + m
        self._finish_cohort_members(total - 1, float(ends[m]))
