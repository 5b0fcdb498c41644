"""Baseline: the threshold autoscaler others ship by default (KV usage 0.8, queue 5).

llm-d's Workload Variant Autoscaler calls a replica saturated at KV usage >= 0.80 or queue >= 5
(reference/anchors.md §2.2), and KEDA's Prometheus-trigger examples for vLLM drive an HPA with the same
two targets. An HPA with several metrics takes the largest of `ceil(replicas × value / target)` over
its metrics (AverageValue for the queue: `ceil(total / target)`), ignoring ratios within its 10 %
tolerance. That is what this policy computes, from the mean vLLM KV usage and the queue per pod (the
sidecars' plus vLLM's own waiting requests), and, as WVA's saturation rule says, at KV >= 0.8 or queue
>= 5 per pod it adds at least one replica even inside the tolerance. It knows no SLOs, classes or
deadlines. The shared guard gives it the same bounds, cooldowns and step limits as every other policy,
so comparisons isolate the signal.
"""

from sloguard.operator.core.autoscaling.context import ScalingContext, ceil_replicas
from sloguard.operator.core.autoscaling.decision import CapBounds, Recommendation, ScalingHistory
from sloguard.operator.core.autoscaling.snapshot import PoolSnapshot

KV_TARGET = 0.8
QUEUE_TARGET = 5.0
HPA_TOLERANCE = 0.1


class ThresholdPolicy:
    name = "threshold"

    def __init__(self, kv_target: float = KV_TARGET, queue_target: float = QUEUE_TARGET) -> None:
        self.kv_target = kv_target
        self.queue_target = queue_target

    def recommend(
        self, snapshot: PoolSnapshot, context: ScalingContext, history: ScalingHistory, now_s: float
    ) -> Recommendation:
        current = snapshot.replicas.current
        pods = max(1, snapshot.replicas.ready)
        caps = CapBounds(context.min_in_flight, context.max_in_flight)
        wanted: list[tuple[int, str]] = []
        if snapshot.kv_usage_mean is not None:
            ratio = snapshot.kv_usage_mean / self.kv_target
            replicas = pods if abs(ratio - 1.0) <= HPA_TOLERANCE else ceil_replicas(pods * ratio)
            wanted.append((replicas, f"KV {snapshot.kv_usage_mean:.2f} vs {self.kv_target}"))
        queues = [c.queue_depth for c in snapshot.classes if c.queue_depth is not None]
        if snapshot.engine_waiting is not None:
            queues.append(snapshot.engine_waiting)
        if queues:
            total = sum(queues)
            ratio = total / (pods * self.queue_target)
            replicas = pods if abs(ratio - 1.0) <= HPA_TOLERANCE else ceil_replicas(total / self.queue_target)
            wanted.append((replicas, f"queue {total:.0f} vs {self.queue_target:g}/pod"))
        if not wanted:
            return Recommendation(current, f"hold at {current}: no KV or queue series", caps)
        replicas, why = max(wanted)
        saturated = (snapshot.kv_usage_mean is not None and snapshot.kv_usage_mean >= self.kv_target) or (
            bool(queues) and sum(queues) / pods >= self.queue_target
        )
        if saturated and replicas <= pods:
            replicas, why = pods + 1, "saturated: at least one more"
        # Pods still starting count towards the answer, as the HPA counts them in the current scale.
        if replicas <= current and replicas > pods:
            replicas = current
        verdict = "scale out" if replicas > current else ("scale in" if replicas < current else "hold")
        return Recommendation(
            replicas, f"{verdict} to {replicas}: " + "; ".join(w for _, w in wanted) + f" (max: {why})", caps
        )
