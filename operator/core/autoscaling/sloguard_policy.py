"""SLOGuard's replica policy: hierarchical backpressure with start-up-aware batch deadlines.

Interactive classes (no deadline, or a short one) drive the pool on backpressure:

* concurrency demand D = in flight + queued (Little's law without needing service times), projected
  over the start-up time when arrivals are rising, against the sidecars' measured in-flight caps C:
  need = D / (C · u*) with u* = 1 / (1 + headroom);
* attainment error: a class below its target, while the pool is capacity-bound (queueing, utilisation
  at target, or a TTFT tail over target), adds `error_gain` × error (in error budgets) × ready replicas;
  a class below target on an idle pool is reported at risk but does not scale (more replicas would not
  help — the TPOT target is out of reach for the engine, say);
* memory: KV usage ≥ `kv_high` with preemptions adds a replica and caps the sidecars at the
  concurrency that thrashes.

Batch classes (deadline ≥ `batch_deadline_min_s`) scale the pool out only when QLM's waiting-time bound
says their most urgent request would miss its deadline with the replicas ready now — new replicas count
only after the start-up time. Roles (Chiron): Interactive pools ignore batch classes; Batch pools ignore
interactive backpressure; Mixed pools size for interactive first and let batch fill the spare capacity.

Scale-in uses the need inflated by `hysteresis`, only when no class is at risk and no interactive queue
stands; the guard (`guard.decide`) adds cooldowns, stabilisation and step limits. Pure.
"""

import itertools
import math
from dataclasses import dataclass
from statistics import median

from sloguard.api.inferencepool import PoolRole
from sloguard.operator.core.autoscaling.context import ClassKind, ScalingContext, ceil_replicas
from sloguard.operator.core.autoscaling.decision import (
    CapBounds,
    ClassAssessment,
    Recommendation,
    ScalingHistory,
)
from sloguard.operator.core.autoscaling.snapshot import PoolSnapshot
from sloguard.operator.core.autoscaling.waiting_time import (
    BatchBacklog,
    batch_backlogs,
    drain_time_s,
    replicas_to_drain,
)


@dataclass(frozen=True, slots=True)
class InteractiveNeed:
    up: float  # replicas to scale up to (float, before rounding)
    down: float  # replicas a scale-in may go to (need inflated by hysteresis)
    may_scale_in: bool
    reasons: tuple[str, ...]
    classes: tuple[ClassAssessment, ...]
    arrival_rps: float | None
    kv_thrash: bool


@dataclass(frozen=True, slots=True)
class BatchNeed:
    up: float
    down: float
    at_risk: bool
    reasons: tuple[str, ...]
    classes: tuple[ClassAssessment, ...]
    tokens_per_s_per_replica: float | None


class SLOGuardPolicy:
    """The default policy; stateless (memory lives in `ScalingHistory`)."""

    name = "sloguard"

    def recommend(
        self, snapshot: PoolSnapshot, context: ScalingContext, history: ScalingHistory, now_s: float
    ) -> Recommendation:
        replicas = snapshot.replicas
        role = context.role
        interactive = (
            _interactive_need(snapshot, context, history, now_s)
            if role != PoolRole.BATCH
            else InteractiveNeed(0.0, 0.0, True, (), (), None, False)
        )
        reserved = interactive.up if role == PoolRole.MIXED else 0.0
        batch = (
            _batch_need(snapshot, context, history, reserved_replicas=reserved)
            if role != PoolRole.INTERACTIVE
            else BatchNeed(0.0, 0.0, False, (), (), None)
        )
        ignored = _ignored_classes(context)
        up = ceil_replicas(interactive.up + batch.up)
        reasons = [*interactive.reasons, *batch.reasons]
        if up > replicas.current:
            target, verdict = up, f"scale out to {up}"
        elif interactive.may_scale_in and not batch.at_risk:
            down = ceil_replicas(interactive.down + batch.down)
            target = min(replicas.current, down)
            verdict = f"scale in to {target}" if target < replicas.current else f"hold at {replicas.current}"
        else:
            target, verdict = replicas.current, f"hold at {replicas.current}"
        if ignored:
            reasons.append(ignored)
        return Recommendation(
            replicas=target,
            reason=f"{verdict}: " + "; ".join(reasons) if reasons else verdict,
            cap_bounds=_cap_bounds(snapshot, context, interactive.kv_thrash),
            classes=(*interactive.classes, *batch.classes),
            per_replica_tokens_per_s=batch.tokens_per_s_per_replica,
            interactive_arrival_rps=interactive.arrival_rps,
        )


def _ignored_classes(context: ScalingContext) -> str:
    if context.role == PoolRole.INTERACTIVE and context.classes_of(ClassKind.BATCH):
        names = ", ".join(c.name for c in context.classes_of(ClassKind.BATCH))
        return f"interactive pool absorbs no batch: {names} not sized for"
    if context.role == PoolRole.BATCH and context.classes_of(ClassKind.INTERACTIVE):
        names = ", ".join(c.name for c in context.classes_of(ClassKind.INTERACTIVE))
        return f"batch pool: {names} served best-effort, not sized for"
    return ""


def _trend_factor(
    arrival_rps: float, history: ScalingHistory, context: ScalingContext, now_s: float
) -> float:
    """How much the interactive arrival rate will have grown by the time a replica started now is ready.

    The slope is the median of the slopes between successive ticks over the last start-up time, so a
    sustained ramp projects forward while a single step (one steep slope among flat ones) does not.
    """
    since = now_s - context.startup_time_s
    points = [(t, r) for t, r in history.arrival_rates if since <= t < now_s] + [(now_s, arrival_rps)]
    if len(points) < 3 or arrival_rps <= 0:
        return 1.0
    slopes = sorted((r1 - r0) / (t1 - t0) for (t0, r0), (t1, r1) in itertools.pairwise(points) if t1 > t0)
    slope = median(slopes)
    if slope <= 0:
        return 1.0
    projected = arrival_rps + slope * context.startup_time_s
    return min(context.tuning.max_trend_factor, projected / arrival_rps)


@dataclass(frozen=True, slots=True)
class _InteractiveLoad:
    known: bool
    demand: float
    queued: float
    arrival_rps: float
    ttft_over: bool
    worst_error: float  # in error budgets: (target − attainment) / (1 − target); 0 when on target
    classes: tuple[ClassAssessment, ...]


def _interactive_load(snapshot: PoolSnapshot, context: ScalingContext) -> _InteractiveLoad:
    demand = queued = arrival = worst_error = 0.0
    known = ttft_over = False
    assessments: list[ClassAssessment] = []
    for cls in context.classes_of(ClassKind.INTERACTIVE):
        snap = snapshot.class_named(cls.name)
        if snap is None:
            assessments.append(ClassAssessment(cls.name, ClassKind.INTERACTIVE, False, note="no series"))
            continue
        if snap.demand is not None:
            known = True
            demand += snap.demand
            queued += snap.queue_depth or 0.0
        arrival += snap.arrival_rate_rps or 0.0
        ttft_over = ttft_over or (snap.ttft_p99_s is not None and snap.ttft_p99_s > cls.ttft_s)
        note = ""
        at_risk = snap.attainment is not None and snap.attainment < cls.attainment_target
        if snap.attainment is not None and at_risk:
            error = (cls.attainment_target - snap.attainment) / (1.0 - cls.attainment_target + 1e-9)
            worst_error = max(worst_error, error)
            note = f"attainment {snap.attainment:.3f} < {cls.attainment_target}"
        assessments.append(
            ClassAssessment(
                cls.name, ClassKind.INTERACTIVE, at_risk, snap.attainment, cls.attainment_target, note=note
            )
        )
    return _InteractiveLoad(known, demand, queued, arrival, ttft_over, worst_error, tuple(assessments))


def _interactive_need(
    snapshot: PoolSnapshot, context: ScalingContext, history: ScalingHistory, now_s: float
) -> InteractiveNeed:
    tuning = context.tuning
    ready = snapshot.replicas.ready
    if not context.classes_of(ClassKind.INTERACTIVE):
        return InteractiveNeed(0.0, 0.0, True, (), (), None, False)
    load = _interactive_load(snapshot, context)
    if not load.known:
        current = float(snapshot.replicas.current)
        why = ("no interactive concurrency data: hold",)
        return InteractiveNeed(current, current, False, why, load.classes, None, False)
    demand, queued, worst_error = load.demand, load.queued, load.worst_error

    cap = snapshot.mean_cap_per_pod or float(context.max_in_flight)
    cap = max(cap, 1.0)
    u_target = context.target_utilisation
    trend = _trend_factor(load.arrival_rps, history, context, now_s)
    need = demand * trend / (cap * u_target)
    reasons = [f"interactive demand {demand:.1f} over cap {cap:.1f}/pod at {u_target:.2f} → {need:.2f}"]
    if trend > 1.0:
        reasons.append(f"arrivals rising: ×{trend:.2f} over the {context.startup_time_s:.0f}s start-up")
    utilisation = demand / (ready * cap) if ready > 0 else math.inf
    kv_thrash = (
        snapshot.kv_usage_max is not None
        and snapshot.kv_usage_max >= tuning.kv_high
        and (snapshot.preemptions_per_s or 0.0) > 0.0
    )
    capacity_bound = (
        queued > tuning.idle_queue_depth or utilisation >= u_target or load.ttft_over or kv_thrash
    )
    if worst_error > 0:
        if capacity_bound:
            boost = ready * min(1.0, tuning.error_gain * worst_error)
            need = max(need, ready + max(1.0, boost))
            reasons.append(f"attainment {worst_error:.1f} error budgets under target while capacity-bound")
        else:
            reasons.append("attainment under target but the pool is not capacity-bound: not scaling for it")
    if kv_thrash:
        need = max(need, ready + 1.0)
        reasons.append(f"KV cache {snapshot.kv_usage_max:.2f} full and preempting")
    down = demand * trend * (1.0 + tuning.hysteresis) / (cap * u_target)
    may_scale_in = worst_error <= 0 and queued <= tuning.idle_queue_depth and not kv_thrash
    return InteractiveNeed(
        need, down, may_scale_in, tuple(reasons), load.classes, load.arrival_rps, kv_thrash
    )


def _throughput(snapshot: PoolSnapshot, context: ScalingContext, history: ScalingHistory) -> float | None:
    """Per-replica decode throughput: measured under backlog, else at least what was seen or remembered."""
    ready = snapshot.replicas.ready
    measured = None
    if snapshot.generation_tokens_per_s is not None and ready > 0 and snapshot.generation_tokens_per_s > 0:
        measured = snapshot.generation_tokens_per_s / ready
    backlog = sum(c.queue_depth or 0.0 for c in snapshot.classes) > 0
    if measured is not None and backlog:
        return measured  # saturated: this is the capacity
    known = [
        v
        for v in (measured, history.per_replica_tokens_per_s, context.tuning.prior_tokens_per_s_per_replica)
        if v
    ]
    return max(known) if known else None


def _batch_need(
    snapshot: PoolSnapshot, context: ScalingContext, history: ScalingHistory, *, reserved_replicas: float
) -> BatchNeed:
    classes = context.classes_of(ClassKind.BATCH)
    if not classes:
        return BatchNeed(0.0, 0.0, False, (), (), None)
    backlogs, notes = batch_backlogs(context, classes, snapshot.classes)
    rate = _throughput(snapshot, context, history)
    ready_for_batch = max(0.0, snapshot.replicas.ready - reserved_replicas)
    arrival_tokens = 0.0
    for cls in classes:
        snap = snapshot.class_named(cls.name)
        if snap is not None and snap.arrival_rate_rps and snap.output_tokens_mean:
            arrival_tokens += snap.arrival_rate_rps * snap.output_tokens_mean
    floor = arrival_tokens / rate if rate else 0.0  # capacity that keeps pace with batch arrivals
    reasons = list(notes)
    if not backlogs:
        return BatchNeed(0.0, floor, False, tuple(reasons), (), rate)
    if rate is None:
        # Work is queued but nothing measures throughput yet: make sure something serves it.
        first = 1.0 if snapshot.replicas.current - reserved_replicas < 1 else 0.0
        reasons.append("batch work queued, throughput unknown yet")
        return BatchNeed(first, max(first, floor), False, tuple(reasons), (), None)
    up = down = 0.0
    at_risk = False
    assessments = []
    for backlog in backlogs:
        available = backlog.slack_s - backlog.service_s
        wait = drain_time_s(backlog.tokens_upper, ready_for_batch, rate)
        late = wait > available
        at_risk = at_risk or late
        fewest = replicas_to_drain(
            tokens=backlog.tokens_upper,
            available_s=available,
            ready=ready_for_batch,
            tokens_per_s_per_replica=rate,
            startup_s=context.startup_time_s,
        )
        relaxed = replicas_to_drain(
            tokens=backlog.tokens_upper,
            available_s=available / (1.0 + context.tuning.hysteresis),
            ready=ready_for_batch,
            tokens_per_s_per_replica=rate,
            startup_s=context.startup_time_s,
        )
        note = (
            f"wait {wait:.0f}s vs {available:.0f}s left"
            if math.isfinite(wait)
            else f"no capacity; {available:.0f}s left"
        )
        need = float(context.max_replicas) if fewest is None else fewest
        if fewest is None:
            note += "; too late for new replicas to help"
        up = max(up, need if late else 0.0)
        down = max(down, relaxed if relaxed is not None else float(context.max_replicas))
        assessments.append(
            ClassAssessment(
                backlog.name,
                ClassKind.BATCH,
                late,
                target=backlog.target,
                estimated_wait_s=wait if math.isfinite(wait) else None,
                slack_s=available,
                note=note,
            )
        )
    worst = min(
        backlogs, key=lambda b: b.slack_s - drain_time_s(b.tokens_upper, max(ready_for_batch, 1e-9), rate)
    )
    reasons.append(_describe(worst, rate, ready_for_batch))
    return BatchNeed(up, max(down, floor), at_risk, tuple(reasons), tuple(assessments), rate)


def _describe(backlog: BatchBacklog, rate: float, ready: float) -> str:
    return (
        f"batch {backlog.name}: {backlog.tokens_upper:.0f} tokens ahead (p{backlog.target * 100:g}) at "
        f"{rate:.0f} tok/s × {ready:.1f} replicas vs {backlog.slack_s:.0f}s slack"
    )


def _cap_bounds(snapshot: PoolSnapshot, context: ScalingContext, kv_thrash: bool) -> CapBounds:
    low, high = context.min_in_flight, context.max_in_flight
    ready = snapshot.replicas.ready
    if kv_thrash and ready > 0:
        in_flight = sum(c.in_flight or 0.0 for c in snapshot.classes) or (snapshot.engine_running or 0.0)
        if in_flight > 0:
            high = max(low, min(high, math.floor(in_flight / ready)))
    return CapBounds(low, high)
