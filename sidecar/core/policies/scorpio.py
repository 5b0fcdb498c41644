"""scorpio: SCORPIO's TTFT and TPOT guards as a sidecar policy, faithful to the paper's public code.

reference/papers.md §1.4-1.5 and §6.2 (`ldf_rej_gate1.3_credit`):
- TTFT guard: a new arrival is judged at the tail of the queue (all waiting prompt tokens ahead of it,
  as in `_reject_ttft_unattainable` before reordering); afterwards, at every release, the LDF-ordered
  queue is walked and a request whose slack is below `t_prefill(cum tokens) + 50 ms` is rejected (it
  frees its place). A class with `onUnattainable: BestEffort` is demoted instead of rejected.
- TPOT guard: candidates in LDF order are admitted while `ITL(VBS, L_avg + pred/2) * eta < 0.99 *
  T_min` (eta = 1.3) and the KV cache has room; the first failure stops the step (head-of-line).
  `credit_batching` counts the batch as the virtual batch size, which is right only when the engine does
  credit-based batching (SCORPIO's fork; the simulator's `scorpio-engine` plug-in). Default false: the
  sidecar sits in front of an unmodified vLLM (what the operator deploys), which decodes every running
  request every iteration, so the gate counts every running request.
Deviation for liveness: with nothing in flight, the head is released even if the gate fails (SCORPIO
would hold it until the TTFT guard rejects it; a demoted request would wait forever). No engine
priority (vLLM runs FCFS on the sidecar's release order).
"""

from dataclasses import dataclass, field
from typing import ClassVar

from sloguard.api.errors import RejectionReason
from sloguard.api.policies import SchedulingPolicyName
from sloguard.sidecar.core.base_policy import Entry, Gate
from sloguard.sidecar.core.ldf_policy import LdfPolicy
from sloguard.sidecar.core.policy import Admitted, Decision, Rejected
from sloguard.sidecar.core.tpot_guard import tpot_admission
from sloguard.sidecar.core.ttft_guard import next_expiry_s, unattainable


@dataclass(frozen=True)
class ScorpioParameters:
    margin_s: float = field(default=0.05, metadata={"min": 0.0})
    eta: float = field(default=1.3, metadata={"min": 0.0})
    headroom: float = field(default=0.99, metadata={"min": 0.0})
    credit_batching: bool = False


class ScorpioPolicy(LdfPolicy):
    name: ClassVar[SchedulingPolicyName] = SchedulingPolicyName.SCORPIO
    Parameters: ClassVar[type[ScorpioParameters]] = ScorpioParameters
    params: ScorpioParameters

    def _wait_s(self, tokens: float, count: int, out_tokens: float = 0.0) -> float:
        return self.latency.prefill_s(tokens)

    def _arrival_check(self, entry: Entry, now_s: float) -> Decision:
        spec = entry.spec
        tokens = self.pending_prefill_tokens() + self._main.total_tokens + spec.prompt_tokens
        predicted_s = self._wait_s(tokens, len(self._main) + 1, 0.0)
        slack_s = spec.ttft_deadline_s - now_s
        if slack_s < predicted_s + self.params.margin_s:
            if self.demotable(entry):
                return Admitted(spec.request_id, entry.predicted_output_tokens, predicted_s, demoted=True)
            return Rejected(
                spec.request_id,
                RejectionReason.TTFT_UNATTAINABLE,
                retry_after_s=round(predicted_s, 3),
                detail=f"slack {slack_s:.3f}s < predicted wait {predicted_s:.3f}s + margin",
            )
        return Admitted(spec.request_id, entry.predicted_output_tokens, predicted_s)

    def _expire(self, now_s: float) -> list[tuple[Entry, RejectionReason]]:
        ids = unattainable(
            self._main,
            now_s=now_s,
            base_tokens=self.pending_prefill_tokens(),
            wait_s=self._wait_s,
            margin_s=self.params.margin_s,
        )
        out = []
        for request_id in ids:
            entry = self._entries[request_id]
            if self.demotable(entry):
                self.move_to_best_effort(entry)
            else:
                out.append((entry, RejectionReason.TTFT_UNATTAINABLE))
        return out

    def _gate(self, entry: Entry, now_s: float) -> Gate:
        if self.in_flight_count == 0:
            return Gate.RELEASE
        verdict = tpot_admission(
            self._tpot,
            self.latency,
            running_len_tokens=self.running_len_tokens(),
            candidate_tpot_s=entry.spec.tpot_s,
            candidate_prompt_tokens=entry.spec.prompt_tokens,
            candidate_output_tokens=entry.predicted_output_tokens,
            eta=self.params.eta,
            headroom=self.params.headroom,
            virtual=self.params.credit_batching,
        )
        return Gate.RELEASE if verdict.admit else Gate.STOP

    def next_wakeup_s(self, now_s: float) -> float | None:
        super().next_wakeup_s(now_s)
        return next_expiry_s(
            self._main,
            base_tokens=self.pending_prefill_tokens(),
            wait_s=self._wait_s,
            margin_s=self.params.margin_s,
        )
