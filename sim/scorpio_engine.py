"""SCORPIO inside the engine: its V0 scheduler as a batch-scheduler plug-in of the simulated vLLM.

The benchmarks (`bench/scorpio.py`) run this as the paper ran SCORPIO: everything in the engine's own
`schedule()` call, nothing in front (the sidecar in front is a pass-through fcfs). Faithful to the public
code (reference/papers.md §1.4-1.5, policy `ldf_rej_gate1.3_credit`), at every iteration:

1. TTFT guard: walk the waiting queue in its current order (the previous LDF order, new arrivals at the
   tail) summing prompt tokens; reject a request whose slack is below `t_prefill(cum) + 50 ms` (a
   rejected request frees its place in line). Rejected requests leave the engine with finish reason
   "reject".
2. LDF: re-sort the waiting queue by TTFT deadline (arrival + TTFT SLO).
3. vLLM V0's `_schedule_default`, no chunked prefill: first prefills, in queue order, each gated by the
   TPOT guard (VBS admission: `ITL(VBS, L_avg + pred/2) * eta < 0.99 * T_min`, eta = 1.3; the first
   failure stops the step, with SCORPIO's memo shortcut) and by KV room, within the prefill token budget
   (`--max-num-batched-tokens`, 1024 in the paper); only when no prefill was scheduled, the decodes of
   the running requests, gated by credit-based batching (a request whose TPOT SLO is k times the
   tightest decodes every k-th iteration).

Deviation for liveness (as the sidecar `scorpio` policy): with nothing running, the head of the queue is
admitted even if the TPOT gate fails (SCORPIO would hold it until the TTFT guard rejects it; the engine
has no timer to wake a scheduler that holds everything). KV exhaustion preempts the last running request
by recompute, as vLLM does.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from sloguard.sidecar.core.latency import LatencyModel
from sloguard.sidecar.core.tpot_guard import TpotState, tpot_admission
from sloguard.sim.engine.scheduler import SchedulingContext
from sloguard.sim.engine.state import SequenceState


@dataclass(frozen=True, slots=True)
class ScorpioRequest:
    """What SCORPIO's fork adds to a request's sampling params: its SLOs and predicted output length."""

    ttft_s: float
    tpot_s: float
    predicted_output_tokens: float


class ScorpioEngineScheduler:
    """SCORPIO's `ldf_rej_gate1.3_credit` batch formation. `requests`: the SLOs and predictions of every
    request the engine will see, by id (a request missing here raises KeyError when it arrives)."""

    def __init__(
        self,
        requests: Mapping[str, ScorpioRequest],
        latency: LatencyModel,
        *,
        eta: float = 1.3,
        headroom: float = 0.99,
        margin_s: float = 0.05,
        prefill_budget_tokens: int = 1024,
    ) -> None:
        self.requests = requests
        self.latency = latency
        self.eta = eta
        self.headroom = headroom
        self.margin_s = margin_s
        self.prefill_budget_tokens = prefill_budget_tokens
        self._tpot = TpotState()
        self._in_state: dict[str, float] = {}  # running request id -> its TPOT SLO, as in _tpot
        self._credit: dict[str, float] = {}
        self._memo: tuple[float, int] | None = None  # (refused TPOT, n_running) of the last LATER
        self.rejected_total = 0

    def _info(self, seq: SequenceState) -> ScorpioRequest:
        return self.requests[seq.request_id]

    def _sync(self, running: list[SequenceState]) -> None:
        """Drop finished and preempted requests from the TPOT state (vLLM's engine does it on finish)."""
        live = {seq.request_id for seq in running}
        for request_id in [r for r in self._in_state if r not in live]:
            self._tpot.remove(self._in_state.pop(request_id))
            self._credit.pop(request_id, None)

    def _reject_unattainable(self, ctx: SchedulingContext) -> None:
        cum = 0
        for seq in list(ctx.waiting):
            cum += seq.num_tokens - seq.num_computed
            info = self._info(seq)
            slack_s = seq.arrival_s + info.ttft_s - ctx.now_s
            # a preempted request back in the queue already had its first token: it is not judged again
            if seq.num_output == 0 and slack_s < self.latency.prefill_s(float(cum)) + self.margin_s:
                ctx.reject(seq)
                self.rejected_total += 1
                cum -= seq.num_tokens - seq.num_computed

    def _admissible(self, seq: SequenceState, running_len: float) -> bool:
        info = self._info(seq)
        n_running = len(self._tpot)
        memo = self._memo
        if memo is not None and memo[0] >= info.tpot_s and n_running >= memo[1]:
            return False
        verdict = tpot_admission(
            self._tpot,
            self.latency,
            running_len_tokens=running_len,
            candidate_tpot_s=info.tpot_s,
            candidate_prompt_tokens=float(seq.prompt_tokens),
            candidate_output_tokens=info.predicted_output_tokens,
            eta=self.eta,
            headroom=self.headroom,
            virtual=True,
        )
        self._memo = None if verdict.admit else (info.tpot_s, n_running)
        return verdict.admit

    def _schedule_prefills(self, ctx: SchedulingContext) -> bool:
        budget = min(self.prefill_budget_tokens, ctx.token_budget)
        running_len = float(sum(seq.num_tokens for seq in ctx.running))
        scheduled_any = False
        while len(ctx.waiting) and len(ctx.running) < ctx.max_num_seqs:
            head = ctx.waiting.peek()
            need = head.num_tokens - head.num_computed
            # a single recomputed request longer than the budget still runs alone (vLLM V0 would have
            # refused to start with such a budget; prompts here never exceed it)
            if need > budget and (scheduled_any or need > ctx.token_budget):
                break
            if ctx.running and not self._admissible(head, running_len):
                break
            if not ctx.try_allocate(head, need):
                break
            seq = ctx.admit()
            ctx.schedule(seq, need)
            budget -= need
            running_len += need
            tpot_s = self._info(seq).tpot_s
            self._tpot.add(tpot_s)
            self._in_state[seq.request_id] = tpot_s
            self._credit[seq.request_id] = 0.0
            scheduled_any = True
        return scheduled_any

    def _schedule_decodes(self, ctx: SchedulingContext) -> None:
        t_min = self._tpot.min_tpot_s()
        index = 0
        while index < len(ctx.running):
            seq = ctx.running[index]
            tpot_s = self._in_state[seq.request_id]
            if t_min is not None and tpot_s != t_min:
                credit = self._credit[seq.request_id] + t_min / tpot_s
                if credit < 1.0:
                    self._credit[seq.request_id] = credit
                    index += 1
                    continue  # skipped this iteration, keeps its KV
                self._credit[seq.request_id] = credit - 1.0
            need = seq.num_tokens - seq.num_computed
            while not ctx.try_allocate(seq, need):
                victim = ctx.running[-1]
                ctx.preempt(victim)
                self._sync(ctx.running)
                if victim is seq:
                    break
            else:
                ctx.schedule(seq, need)
                index += 1
                continue
            break  # the request itself was preempted: it was the last one

    def schedule(self, ctx: SchedulingContext) -> None:
        self._sync(ctx.running)
        self._reject_unattainable(ctx)
        ctx.waiting.reorder(lambda s: (s.arrival_s + self._info(s).ttft_s, float(s.arrival_seq)))
        if len(ctx.waiting) and self._schedule_prefills(ctx):
            return
        self._schedule_decodes(ctx)
