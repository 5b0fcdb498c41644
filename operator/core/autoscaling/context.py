"""What the spec says about scaling one pool, in seconds and plain numbers, plus the tuning constants.

`ScalingContext.from_spec` converts an `InferencePoolSpec` and the pool's classes (`SLOClassConfig`, as
the sidecar configuration carries them) once; the policies and the guard read only this. The cluster
simulation builds the same object from the same spec, so decisions in virtual time match the operator's.
"""

import math
from dataclasses import dataclass, field
from enum import StrEnum
from statistics import NormalDist

from sloguard.api.duration import parse_duration_s
from sloguard.api.inferencepool import InferencePoolSpec, PoolRole
from sloguard.api.sidecar_config import SLOClassConfig


class ClassKind(StrEnum):
    """Interactive classes scale on backpressure; batch classes only on deadlines at risk."""

    INTERACTIVE = "interactive"
    BATCH = "batch"


@dataclass(frozen=True, slots=True)
class AutoscalerTuning:
    """Constants the spec does not expose; defaults are the ones docs/autoscaling.md explains."""

    max_metrics_age_s: float = 60.0  # older newest-sample → MetricsUnavailable (MetricsStale), hold
    hysteresis: float = 0.2  # scale in only when the need plus this fraction still fits fewer replicas
    batch_deadline_min_s: float = 60.0  # a class with a deadline at least this long is a batch class
    deadline_margin_fraction: float = 0.1  # plan to finish batch work this fraction of the deadline early
    kv_high: float = 0.9  # KV usage that, with preemptions, means the engines are memory-bound
    error_gain: float = 0.5  # extra replicas per unit of attainment error (in error budgets), as a fraction
    max_trend_factor: float = 1.5  # most the arrival trend may inflate demand over the start-up time
    output_tokens_cv: float = 1.0  # coefficient of variation of output lengths when none is measured
    in_flight_remaining_fraction: float = 0.5  # share of an in-flight request's tokens still to generate
    prior_tokens_per_s_per_replica: float | None = None  # profiled decode throughput, if known
    idle_queue_depth: float = 0.5  # interactive queue at or below this (pool total) counts as empty
    # queued predicted tokens are scaled by actual/predicted of completed requests, clamped to this range
    length_bias_min: float = 0.25
    length_bias_max: float = 4.0

    def __post_init__(self) -> None:
        if not 0 < self.length_bias_min <= 1 <= self.length_bias_max:
            raise ValueError(
                "need 0 < length_bias_min <= 1 <= length_bias_max, "
                f"got {self.length_bias_min}..{self.length_bias_max}"
            )


@dataclass(frozen=True, slots=True)
class ScalingContext:
    """The scaling-relevant part of a pool's spec and classes."""

    min_replicas: int
    max_replicas: int
    role: PoolRole
    classes: tuple[SLOClassConfig, ...]
    headroom: float = 0.2
    interval_s: float = 15.0
    scale_up_cooldown_s: float = 30.0
    scale_down_cooldown_s: float = 300.0
    max_scale_up_step: int = 4
    max_scale_down_step: int = 1
    startup_time_s: float = 120.0
    min_in_flight: int = 1
    max_in_flight: int = 256
    tuning: AutoscalerTuning = field(default_factory=AutoscalerTuning)

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"need 0 <= min_replicas <= max_replicas, got {self.min_replicas}..{self.max_replicas}"
            )
        if not 1 <= self.min_in_flight <= self.max_in_flight:
            raise ValueError(
                f"need 1 <= min_in_flight <= max_in_flight, got {self.min_in_flight}..{self.max_in_flight}"
            )

    @classmethod
    def from_spec(
        cls,
        spec: InferencePoolSpec,
        classes: tuple[SLOClassConfig, ...] | list[SLOClassConfig],
        tuning: AutoscalerTuning | None = None,
    ) -> "ScalingContext":
        auto = spec.autoscaling
        return cls(
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
            role=spec.role,
            classes=tuple(classes),
            headroom=auto.headroom,
            interval_s=parse_duration_s(auto.interval),
            scale_up_cooldown_s=parse_duration_s(auto.scale_up_cooldown),
            scale_down_cooldown_s=parse_duration_s(auto.scale_down_cooldown),
            max_scale_up_step=auto.max_scale_up_step,
            max_scale_down_step=auto.max_scale_down_step,
            startup_time_s=parse_duration_s(spec.engine.startup_time),
            min_in_flight=spec.sidecar.limits.min_in_flight,
            max_in_flight=spec.sidecar.limits.max_in_flight,
            tuning=tuning or AutoscalerTuning(),
        )

    def kind_of(self, slo_class: SLOClassConfig) -> ClassKind:
        deadline = slo_class.deadline_s
        if deadline is not None and deadline >= self.tuning.batch_deadline_min_s:
            return ClassKind.BATCH
        return ClassKind.INTERACTIVE

    def classes_of(self, kind: ClassKind) -> tuple[SLOClassConfig, ...]:
        return tuple(c for c in self.classes if self.kind_of(c) == kind)

    @property
    def target_utilisation(self) -> float:
        """Utilisation the scale-up rule aims at: headroom 0.2 means 1/1.2 ≈ 0.83."""
        return 1.0 / (1.0 + self.headroom)

    def clamp(self, replicas: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, replicas))


def z_for(target: float) -> float:
    """One-sided normal quantile for a class's attainment target, clamped to a sane range (0.5..0.9999)."""
    return NormalDist().inv_cdf(min(0.9999, max(0.5, target)))


MAX_REPLICAS_ANSWER = 1_000_000
"""Largest replica count a policy answers (bounds clamp it further); stands in for "unbounded"."""


def ceil_replicas(value: float) -> int:
    """Ceiling that forgives float noise (2.0000000001 → 2) and saturates instead of overflowing."""
    if math.isnan(value):
        raise ValueError("replica need is NaN: a policy computed from invalid numbers")
    if value >= MAX_REPLICAS_ANSWER:
        return MAX_REPLICAS_ANSWER
    return max(0, math.ceil(value - 1e-9))
