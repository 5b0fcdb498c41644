"""The autoscaling decision core: pool snapshot + spec + history + time in, scaling decision out.

Called by the operator's autoscaling timer (real time, snapshots from Prometheus) and by the cluster
simulation (virtual time, snapshots from simulated replicas). Three policies share one interface and
one guard (`decide`): SLOGuard's, the KV/queue threshold baseline and a Chiron reconstruction.
Pure: no kopf, kubernetes or Prometheus imports, no clock.
"""

from sloguard.operator.core.autoscaling.chiron_policy import ChironPolicy
from sloguard.operator.core.autoscaling.context import AutoscalerTuning, ClassKind, ScalingContext
from sloguard.operator.core.autoscaling.decision import (
    CapBounds,
    ClassAssessment,
    DecisionCondition,
    Recommendation,
    ScalingDecision,
    ScalingEvent,
    ScalingHistory,
)
from sloguard.operator.core.autoscaling.guard import AutoscalerPolicy, decide
from sloguard.operator.core.autoscaling.loop import AutoscalerLoop
from sloguard.operator.core.autoscaling.sloguard_policy import SLOGuardPolicy
from sloguard.operator.core.autoscaling.snapshot import ClassSnapshot, PoolSnapshot, ReplicaCounts
from sloguard.operator.core.autoscaling.threshold_policy import ThresholdPolicy

POLICIES: dict[str, type[SLOGuardPolicy] | type[ThresholdPolicy] | type[ChironPolicy]] = {
    SLOGuardPolicy.name: SLOGuardPolicy,
    ThresholdPolicy.name: ThresholdPolicy,
    ChironPolicy.name: ChironPolicy,
}
"""Policy name → class; every class constructs with no arguments."""

__all__ = [
    "POLICIES",
    "AutoscalerLoop",
    "AutoscalerPolicy",
    "AutoscalerTuning",
    "CapBounds",
    "ChironPolicy",
    "ClassAssessment",
    "ClassKind",
    "ClassSnapshot",
    "DecisionCondition",
    "PoolSnapshot",
    "Recommendation",
    "ReplicaCounts",
    "SLOGuardPolicy",
    "ScalingContext",
    "ScalingDecision",
    "ScalingEvent",
    "ScalingHistory",
    "ThresholdPolicy",
    "decide",
]
