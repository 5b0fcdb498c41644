"""Baseline: a reconstruction of Chiron's global autoscaler (arXiv 2501.08090), as papers.md §2.3 infers it.

Interactive: utilisation u = (in flight + queued) / (ready × batch size B) with B the sidecars' mean
cap; scale out to `ceil(demand / B) + headroom` (at least one more) when u > U_hi or an interactive
TTFT p99 is over target; scale in by one when u < U_lo. Batch: QLM's waiting time with the CLT bound
(shared with SLOGuard's policy, `waiting_time.py`); scale out when `W + service > deadline − margin`
to the replicas that drain the work within the slack, counting every replica as productive at once
(Chiron leans on over-provisioned mixed capacity rather than modelling start-up); scale in by one
when the deadlines would still hold. Its published constants are unknown (papers.md §2.5); U_hi = 0.8
and U_lo = 0.5 are the skeleton's. Pure.
"""

import math
from dataclasses import dataclass

from sloguard.api.inferencepool import PoolRole
from sloguard.operator.core.autoscaling.context import ClassKind, ScalingContext, ceil_replicas
from sloguard.operator.core.autoscaling.decision import (
    CapBounds,
    ClassAssessment,
    Recommendation,
    ScalingHistory,
)
from sloguard.operator.core.autoscaling.snapshot import PoolSnapshot
from sloguard.operator.core.autoscaling.waiting_time import batch_backlogs, drain_time_s

U_HIGH = 0.8
U_LOW = 0.5


class ChironPolicy:
    name = "chiron"

    def recommend(
        self, snapshot: PoolSnapshot, context: ScalingContext, history: ScalingHistory, now_s: float
    ) -> Recommendation:
        current = snapshot.replicas.current
        caps = CapBounds(context.min_in_flight, context.max_in_flight)
        interactive = _interactive(snapshot, context)
        reserved = interactive.up if context.role == PoolRole.MIXED else 0
        batch = _batch(snapshot, context, history, reserved)
        up = ceil_replicas(interactive.up + batch.up)
        if up > current:
            target, verdict = up, "scale out"
        elif (
            interactive.scale_in_ok
            and not batch.at_risk
            and ceil_replicas(interactive.down + batch.down) < current
        ):
            target, verdict = current - 1, "scale in"
        else:
            target, verdict = current, "hold"
        reasons = [r for r in (interactive.reason, batch.reason) if r]
        return Recommendation(
            target,
            f"{verdict} to {target}: " + "; ".join(reasons),
            caps,
            (*interactive.classes, *batch.classes),
        )


@dataclass(frozen=True, slots=True)
class _Need:
    up: float
    down: float
    scale_in_ok: bool
    at_risk: bool
    reason: str
    classes: tuple[ClassAssessment, ...]


def _interactive(snapshot: PoolSnapshot, context: ScalingContext) -> _Need:
    classes = context.classes_of(ClassKind.INTERACTIVE) if context.role != PoolRole.BATCH else ()
    if not classes:
        return _Need(0.0, 0.0, True, False, "", ())
    ready = snapshot.replicas.ready
    batch_size = max(1.0, snapshot.mean_cap_per_pod or float(context.max_in_flight))
    demand = 0.0
    ttft_risk = False
    assessments = []
    for cls in classes:
        snap = snapshot.class_named(cls.name)
        if snap is None or snap.demand is None:
            continue
        demand += snap.demand
        risky = snap.ttft_p99_s is not None and snap.ttft_p99_s > cls.ttft_s
        ttft_risk = ttft_risk or risky
        assessments.append(
            ClassAssessment(cls.name, ClassKind.INTERACTIVE, risky, snap.attainment, cls.attainment_target)
        )
    utilisation = demand / (ready * batch_size) if ready else (math.inf if demand else 0.0)
    base = ceil_replicas(demand / batch_size)
    needed = float(base + ceil_replicas(base * context.headroom))
    reason = f"interactive utilisation {utilisation:.2f} of B={batch_size:.0f}"
    if utilisation > U_HIGH or ttft_risk:
        return _Need(max(needed, ready + 1.0), needed, False, ttft_risk, reason, tuple(assessments))
    if utilisation < U_LOW:
        return _Need(needed, needed, True, False, reason, tuple(assessments))
    return _Need(float(ready), float(ready), False, False, reason, tuple(assessments))


def _batch(
    snapshot: PoolSnapshot, context: ScalingContext, history: ScalingHistory, reserved: float
) -> _Need:
    classes = context.classes_of(ClassKind.BATCH) if context.role != PoolRole.INTERACTIVE else ()
    backlogs, _ = batch_backlogs(context, classes, snapshot.classes)
    if not backlogs:
        return _Need(0.0, 0.0, True, False, "", ())
    ready = snapshot.replicas.ready
    ready_for_batch = max(0.0, ready - reserved)
    rate = history.per_replica_tokens_per_s
    if snapshot.generation_tokens_per_s and ready:
        rate = max(rate or 0.0, snapshot.generation_tokens_per_s / ready)
    if not rate:
        return _Need(1.0, 1.0, False, False, "batch work queued, throughput unknown", ())
    up = down = 0.0
    at_risk = False
    assessments = []
    for backlog in backlogs:
        available = backlog.slack_s - backlog.service_s
        wait = drain_time_s(backlog.tokens_upper, ready_for_batch, rate)
        late = wait > available
        at_risk = at_risk or late
        need = backlog.tokens_upper / (rate * available) if available > 0 else float(context.max_replicas)
        up = max(up, need if late else 0.0)
        down = max(down, need)
        assessments.append(
            ClassAssessment(
                backlog.name,
                ClassKind.BATCH,
                late,
                target=backlog.target,
                estimated_wait_s=wait if math.isfinite(wait) else None,
                slack_s=available,
            )
        )
    reason = f"batch backlog in {len(backlogs)} class(es), late={at_risk}"
    return _Need(up, down, not at_risk, at_risk, reason, tuple(assessments))
