"""`AutoscalerLoop`: one policy, one pool's context and its history, stepped tick by tick.

A convenience over `decide` + `ScalingHistory.after` for callers that keep one loop per pool: the
operator's timer (real time) and the cluster simulation (virtual time). Holds state in memory only;
pure otherwise (the caller passes `now_s`).
"""

from dataclasses import dataclass, field

from sloguard.operator.core.autoscaling.context import ScalingContext
from sloguard.operator.core.autoscaling.decision import ScalingDecision, ScalingHistory
from sloguard.operator.core.autoscaling.guard import AutoscalerPolicy, decide
from sloguard.operator.core.autoscaling.snapshot import PoolSnapshot


@dataclass
class AutoscalerLoop:
    policy: AutoscalerPolicy
    context: ScalingContext
    history: ScalingHistory = field(default_factory=ScalingHistory)

    def step(self, snapshot: PoolSnapshot, now_s: float) -> ScalingDecision:
        """Decide for `snapshot` at `now_s` and remember the decision for the next tick."""
        if self.history.events and now_s < self.history.events[-1].time_s:
            raise ValueError(f"time went backwards: {now_s} < {self.history.events[-1].time_s}")
        decision = decide(self.policy, snapshot, self.context, self.history, now_s)
        self.history = self.history.after(decision)
        return decision
