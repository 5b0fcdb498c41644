"""The decision core's output and its memory: a `ScalingDecision` per tick and the `ScalingHistory` it feeds.

The caller (the operator's timer, or the cluster simulation) keeps the history between ticks and passes
it back in: `history.after(decision)` returns the next one. Both are immutable plain data; the operator
turns `DecisionCondition`s into status conditions with `sloguard.api.conditions.set_condition`.
"""

from dataclasses import dataclass, replace

from sloguard.api.conditions import ConditionStatus, ConditionType


@dataclass(frozen=True, slots=True)
class CapBounds:
    """Bounds for each sidecar's adaptive in-flight cap (Chiron's local autoscaler moves inside them)."""

    min_in_flight: int
    max_in_flight: int


@dataclass(frozen=True, slots=True)
class DecisionCondition:
    type: ConditionType
    status: ConditionStatus
    reason: str  # CamelCase
    message: str


@dataclass(frozen=True, slots=True)
class ClassAssessment:
    """How one class stands: attainment against target, and for batch classes the deadline estimate."""

    name: str
    kind: str  # ClassKind value
    at_risk: bool
    attainment: float | None = None
    target: float | None = None
    estimated_wait_s: float | None = None  # batch: time to drain the work ahead of its most urgent request
    slack_s: float | None = None  # batch: deadline minus the oldest queued request's age, minus margin
    note: str = ""


@dataclass(frozen=True, slots=True)
class Recommendation:
    """A policy's raw answer, before the shared guard applies bounds, cooldowns and step limits."""

    replicas: int
    reason: str
    cap_bounds: CapBounds
    classes: tuple[ClassAssessment, ...] = ()
    per_replica_tokens_per_s: float | None = None  # throughput estimate to remember
    interactive_arrival_rps: float | None = None  # for the arrival trend next tick


@dataclass(frozen=True, slots=True)
class ScalingDecision:
    policy: str
    time_s: float
    from_replicas: int
    desired_replicas: int
    recommended_replicas: int  # the policy's answer clamped to [min, max]; equals desired unless limited
    reason: str
    cap_bounds: CapBounds
    conditions: tuple[DecisionCondition, ...]
    classes: tuple[ClassAssessment, ...] = ()
    limited_by: str = ""  # "", AtMaxReplicas, AtMinReplicas, ScaleUpCooldown, ScaleDownCooldown, ...
    held_for_metrics: bool = False
    per_replica_tokens_per_s: float | None = None
    interactive_arrival_rps: float | None = None

    @property
    def changed(self) -> bool:
        return self.desired_replicas != self.from_replicas

    def condition(self, type_: ConditionType) -> DecisionCondition | None:
        return next((c for c in self.conditions if c.type == type_), None)


@dataclass(frozen=True, slots=True)
class ScalingEvent:
    time_s: float
    from_replicas: int
    to_replicas: int
    reason: str


@dataclass(frozen=True, slots=True)
class ScalingHistory:
    """What the policies remember: changes, recent recommendations, arrival rates, learned throughput."""

    events: tuple[ScalingEvent, ...] = ()
    recommendations: tuple[tuple[float, int], ...] = ()  # (time_s, recommended replicas)
    arrival_rates: tuple[tuple[float, float], ...] = ()  # (time_s, interactive arrival rate)
    per_replica_tokens_per_s: float | None = None
    keep_s: float = 3600.0  # how far back the tuples reach

    def last_time(self, *, up: bool | None = None) -> float | None:
        """Time of the last change (`up=None`), last scale-up (`True`) or last scale-down (`False`)."""
        for event in reversed(self.events):
            if up is None or (event.to_replicas > event.from_replicas) == up:
                return event.time_s
        return None

    def max_recommendation_since(self, since_s: float) -> int | None:
        values = [r for t, r in self.recommendations if t >= since_s]
        return max(values) if values else None

    def oldest_recommendation_s(self) -> float | None:
        return self.recommendations[0][0] if self.recommendations else None

    def after(self, decision: ScalingDecision) -> "ScalingHistory":
        """The history to pass to the next tick."""
        now_s = decision.time_s
        horizon = now_s - self.keep_s
        events = self.events
        if decision.changed:
            events = (
                *events,
                ScalingEvent(now_s, decision.from_replicas, decision.desired_replicas, decision.reason),
            )
        recommendations = self.recommendations
        arrivals = self.arrival_rates
        if not decision.held_for_metrics:
            recommendations = (*recommendations, (now_s, decision.recommended_replicas))
            if decision.interactive_arrival_rps is not None:
                arrivals = (*arrivals, (now_s, decision.interactive_arrival_rps))
        return replace(
            self,
            events=tuple(e for e in events if e.time_s >= horizon)[-64:],
            recommendations=tuple(r for r in recommendations if r[0] >= horizon),
            arrival_rates=tuple(a for a in arrivals if a[0] >= horizon),
            per_replica_tokens_per_s=decision.per_replica_tokens_per_s or self.per_replica_tokens_per_s,
        )
