"""mooncake: FCFS with Mooncake-style early rejection on predicted load (SCORPIO's `fcfs_mc` baseline).

reference/papers.md §1.5: each request is judged once, on arrival: rejected when its TTFT target is
below the predicted prefill time of every prompt token waiting (its own included), or its TPOT target is
below the inter-token time it would get alone. Admitted requests are never given up later; release is
in arrival order. O(1) per decision.
"""

from dataclasses import dataclass
from typing import ClassVar

from sloguard.api.errors import RejectionReason
from sloguard.api.policies import SchedulingPolicyName
from sloguard.sidecar.core.base_policy import Entry
from sloguard.sidecar.core.policies.fcfs import ArrivalOrderPolicy
from sloguard.sidecar.core.policy import Admitted, Decision, Rejected


@dataclass(frozen=True)
class MooncakeParameters:
    """mooncake takes no parameters."""


class MooncakePolicy(ArrivalOrderPolicy):
    name: ClassVar[SchedulingPolicyName] = SchedulingPolicyName.MOONCAKE
    Parameters: ClassVar[type[MooncakeParameters]] = MooncakeParameters
    params: MooncakeParameters

    def _init_queue(self) -> None:
        super()._init_queue()
        self._waiting_tokens = 0

    def _arrival_check(self, entry: Entry, now_s: float) -> Decision:
        spec = entry.spec
        waiting = self.pending_prefill_tokens() + self._waiting_tokens + spec.prompt_tokens
        ttft_s = self.latency.prefill_s(waiting)
        if spec.ttft_s < ttft_s:
            return Rejected(
                spec.request_id,
                RejectionReason.TTFT_UNATTAINABLE,
                retry_after_s=round(ttft_s - spec.ttft_s, 3),
                detail=f"prefill of {waiting:.0f} waiting tokens {ttft_s:.3f}s > ttft {spec.ttft_s}s",
            )
        alone_s = self.latency.itl_s(1.0, spec.prompt_tokens + entry.predicted_output_tokens / 2)
        if spec.tpot_s < alone_s:
            return Rejected(
                spec.request_id,
                RejectionReason.TPOT_UNATTAINABLE,
                detail=f"inter-token time alone {alone_s:.4f}s > tpot {spec.tpot_s}s",
            )
        return Admitted(spec.request_id, entry.predicted_output_tokens, predicted_ttft_s=ttft_s)

    def _push(self, entry: Entry, now_s: float) -> None:
        super()._push(entry, now_s)
        self._waiting_tokens += entry.spec.prompt_tokens

    def _remove(self, entry: Entry) -> None:
        if self._live.get(entry.request_id) is entry:
            self._waiting_tokens -= entry.spec.prompt_tokens
        super()._remove(entry)

    def _queued_tokens(self) -> float:
        return float(self._waiting_tokens)
