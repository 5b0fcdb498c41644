"""The one entry point: `decide(policy, snapshot, context, history, now_s)` → `ScalingDecision`.

Every policy (SLOGuard's, the threshold baseline, the Chiron reconstruction) answers only "how many
replicas would you like"; this module applies what all of them share, so comparisons between them are
fair:

1. no data or stale data → hold the current replicas (clamped to the spec's bounds) and say so
   (MetricsUnavailable); the policy is not even asked; a policy that fails on the numbers it was given
   holds the same way (reason MetricsInvalid);
2. bounds [minReplicas, maxReplicas] always win;
3. scale-up: at most `maxScaleUpStep` at once, and not within `scaleUpCooldown` of the last scale-up;
4. scale-down: only after `scaleDownCooldown` since any change, only to the highest recommendation of
   that whole window (so the lower need must have held for the window: stabilisation), at most
   `maxScaleDownStep` at once.

Pure; time is the `now_s` argument.
"""

from dataclasses import dataclass
from typing import Protocol

from sloguard.api.conditions import ConditionStatus, ConditionType
from sloguard.operator.core.autoscaling.context import ScalingContext
from sloguard.operator.core.autoscaling.decision import (
    CapBounds,
    ClassAssessment,
    DecisionCondition,
    Recommendation,
    ScalingDecision,
    ScalingHistory,
)
from sloguard.operator.core.autoscaling.snapshot import PoolSnapshot


class AutoscalerPolicy(Protocol):
    """A replica-count policy; `decide` wraps it with the shared rules above."""

    @property
    def name(self) -> str: ...

    def recommend(
        self, snapshot: PoolSnapshot, context: ScalingContext, history: ScalingHistory, now_s: float
    ) -> Recommendation: ...


@dataclass(frozen=True, slots=True)
class _Limit:
    replicas: int
    limited_by: str
    message: str


def decide(
    policy: AutoscalerPolicy,
    snapshot: PoolSnapshot,
    context: ScalingContext,
    history: ScalingHistory,
    now_s: float,
) -> ScalingDecision:
    current = snapshot.replicas.current
    missing = _metrics_problem(snapshot, context, now_s)
    if missing is not None:
        return _hold(policy.name, snapshot, context, now_s, missing)
    try:
        rec = policy.recommend(snapshot, context, history, now_s)
    except (ArithmeticError, ValueError) as err:  # numbers the policy cannot use: hold, as for no data
        return _hold(policy.name, snapshot, context, now_s, ("MetricsInvalid", f"{policy.name}: {err}"))
    recommended = context.clamp(rec.replicas)
    limit = _apply_rate_limits(recommended, current, context, history, now_s)
    if recommended != rec.replicas:
        bound = "AtMaxReplicas" if rec.replicas > recommended else "AtMinReplicas"
        limit = limit or _Limit(
            recommended, bound, f"the policy asked for {rec.replicas}; bounds allow {recommended}"
        )
    desired = limit.replicas if limit else recommended
    reason = rec.reason if desired == recommended else f"{rec.reason}; {limit.message if limit else ''}"
    conditions = (
        _at_risk_condition(rec.classes),
        DecisionCondition(
            ConditionType.SCALING_LIMITED,
            ConditionStatus.TRUE if limit else ConditionStatus.FALSE,
            limit.limited_by if limit else "DesiredWithinRange",
            limit.message if limit else f"desired {desired} replicas is what the policy recommends",
        ),
        DecisionCondition(
            ConditionType.METRICS_UNAVAILABLE,
            ConditionStatus.FALSE,
            "MetricsFound",
            f"newest sample {snapshot.age_s(now_s) or 0.0:.1f}s old",
        ),
    )
    return ScalingDecision(
        policy=policy.name,
        time_s=now_s,
        from_replicas=current,
        desired_replicas=desired,
        recommended_replicas=recommended,
        reason=reason,
        cap_bounds=rec.cap_bounds,
        conditions=conditions,
        classes=rec.classes,
        limited_by=limit.limited_by if limit else "",
        per_replica_tokens_per_s=rec.per_replica_tokens_per_s,
        interactive_arrival_rps=rec.interactive_arrival_rps,
    )


def _metrics_problem(snapshot: PoolSnapshot, context: ScalingContext, now_s: float) -> tuple[str, str] | None:
    if not snapshot.available:
        return (snapshot.unavailable_kind or "MetricsMissing", snapshot.unavailable_reason or "no metrics")
    age = snapshot.age_s(now_s)
    if age is None:
        return ("MetricsMissing", "the snapshot has no sample time")
    if age > context.tuning.max_metrics_age_s:
        return (
            "MetricsStale",
            f"newest sample is {age:.0f}s old (limit {context.tuning.max_metrics_age_s:.0f}s)",
        )
    return None


def _hold(
    policy: str, snapshot: PoolSnapshot, context: ScalingContext, now_s: float, problem: tuple[str, str]
) -> ScalingDecision:
    current = snapshot.replicas.current
    desired = context.clamp(current)
    kind, message = problem
    reason = f"holding at {desired} replicas: {message}"
    limited = desired != current
    if limited:
        reason = f"{reason} (moved into bounds [{context.min_replicas}, {context.max_replicas}])"
    conditions = (
        DecisionCondition(
            ConditionType.SLO_AT_RISK, ConditionStatus.UNKNOWN, "MetricsUnavailable", "attainment unknown"
        ),
        DecisionCondition(
            ConditionType.SCALING_LIMITED,
            ConditionStatus.TRUE if limited else ConditionStatus.FALSE,
            ("AtMaxReplicas" if current > desired else "AtMinReplicas") if limited else "HeldForMetrics",
            reason,
        ),
        DecisionCondition(ConditionType.METRICS_UNAVAILABLE, ConditionStatus.TRUE, kind, message),
    )
    return ScalingDecision(
        policy=policy,
        time_s=now_s,
        from_replicas=current,
        desired_replicas=desired,
        recommended_replicas=desired,
        reason=reason,
        cap_bounds=CapBounds(context.min_in_flight, context.max_in_flight),
        conditions=conditions,
        limited_by="AtMaxReplicas" if current > desired else ("AtMinReplicas" if limited else ""),
        held_for_metrics=True,
    )


def _apply_rate_limits(
    recommended: int, current: int, context: ScalingContext, history: ScalingHistory, now_s: float
) -> _Limit | None:
    if current < context.min_replicas or current > context.max_replicas:
        return None  # bounds changed under us: go straight into them
    if recommended > current:
        return _limit_up(recommended, current, context, history, now_s)
    if recommended < current:
        return _limit_down(recommended, current, context, history, now_s)
    return None


def _limit_up(
    recommended: int, current: int, context: ScalingContext, history: ScalingHistory, now_s: float
) -> _Limit | None:
    last_up = history.last_time(up=True)
    if last_up is not None and now_s - last_up < context.scale_up_cooldown_s:
        wait = context.scale_up_cooldown_s - (now_s - last_up)
        return _Limit(current, "ScaleUpCooldown", f"scale-up to {recommended} waits {wait:.0f}s (cooldown)")
    step = current + context.max_scale_up_step
    if recommended > step:
        return _Limit(
            step, "ScaleUpStepLimit", f"{recommended} wanted, at most +{context.max_scale_up_step} per step"
        )
    return None


def _limit_down(
    recommended: int, current: int, context: ScalingContext, history: ScalingHistory, now_s: float
) -> _Limit | None:
    last_change = history.last_time()
    window = context.scale_down_cooldown_s
    if last_change is not None and now_s - last_change < window:
        wait = window - (now_s - last_change)
        return _Limit(
            current, "ScaleDownCooldown", f"scale-down to {recommended} waits {wait:.0f}s (cooldown)"
        )
    oldest = history.oldest_recommendation_s()
    if oldest is None or oldest > now_s - window:
        return _Limit(
            current,
            "Stabilising",
            f"scale-down to {recommended} needs {window:.0f}s of lower recommendations",
        )
    highest = max(recommended, history.max_recommendation_since(now_s - window) or recommended)
    target = max(highest, current - context.max_scale_down_step)
    if target >= current:
        return _Limit(current, "Stabilising", f"a recommendation of {highest} in the last {window:.0f}s")
    if target == recommended:
        return None
    why = "ScaleDownStepLimit" if target == current - context.max_scale_down_step else "Stabilising"
    return _Limit(target, why, f"{recommended} wanted; stepping down to {target}")


def _at_risk_condition(classes: tuple[ClassAssessment, ...]) -> DecisionCondition:
    risky = [c for c in classes if c.at_risk]
    if not risky:
        return DecisionCondition(
            ConditionType.SLO_AT_RISK, ConditionStatus.FALSE, "AttainmentOnTarget", "every class on target"
        )
    details = "; ".join(f"{c.name}: {c.note}" if c.note else c.name for c in risky)
    reason = "DeadlineAtRisk" if any(c.kind == "batch" for c in risky) else "AttainmentBelowTarget"
    return DecisionCondition(ConditionType.SLO_AT_RISK, ConditionStatus.TRUE, reason, details)
