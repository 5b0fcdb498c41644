"""Builders for autoscaling tests: the example classes, contexts and snapshots with sensible defaults."""

from dataclasses import replace

from sloguard.api.inferencepool import PoolRole
from sloguard.api.sidecar_config import SLOClassConfig
from sloguard.operator.core.autoscaling import (
    ClassSnapshot,
    PoolSnapshot,
    ReplicaCounts,
    ScalingContext,
)

INTERACTIVE = SLOClassConfig(name="interactive", ttft_s=0.5, tpot_s=0.05, attainment_target=0.99)
STANDARD = SLOClassConfig(name="standard", ttft_s=3.0, tpot_s=0.03, attainment_target=0.95)
BATCH = SLOClassConfig(name="batch", ttft_s=15.0, tpot_s=0.05, deadline_s=3600.0, attainment_target=0.99)

NOW_S = 10_000.0


def context(
    role: PoolRole = PoolRole.INTERACTIVE,
    classes: tuple[SLOClassConfig, ...] = (INTERACTIVE,),
    **overrides: object,
) -> ScalingContext:
    base = ScalingContext(
        min_replicas=1,
        max_replicas=10,
        role=role,
        classes=classes,
        headroom=0.25,  # u* = 0.8
        interval_s=15.0,
        scale_up_cooldown_s=30.0,
        scale_down_cooldown_s=300.0,
        max_scale_up_step=4,
        max_scale_down_step=1,
        startup_time_s=120.0,
        min_in_flight=1,
        max_in_flight=16,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def interactive(
    in_flight: float = 0.0, queue: float = 0.0, attainment: float | None = 1.0, **kw: object
) -> ClassSnapshot:
    return ClassSnapshot(
        name="interactive",
        in_flight=in_flight,
        queue_depth=queue,
        attainment=attainment,
        arrival_rate_rps=kw.pop("arrival_rate_rps", 1.0),  # type: ignore[arg-type]
        ttft_p99_s=kw.pop("ttft_p99_s", 0.2),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def batch(
    queue: float,
    *,
    age_s: float = 0.0,
    tokens_mean: float = 100.0,
    tokens_std: float | None = 50.0,
    in_flight: float = 0.0,
    arrival_rate_rps: float = 0.0,
) -> ClassSnapshot:
    return ClassSnapshot(
        name="batch",
        queue_depth=queue,
        in_flight=in_flight,
        queue_oldest_age_s=age_s,
        output_tokens_mean=tokens_mean,
        output_tokens_std=tokens_std,
        arrival_rate_rps=arrival_rate_rps,
    )


def snapshot(
    *classes: ClassSnapshot,
    current: int = 4,
    ready: int | None = None,
    starting: int = 0,
    cap_per_pod: float = 10.0,
    age_s: float = 5.0,
    **kw: object,
) -> PoolSnapshot:
    ready = current - starting if ready is None else ready
    return PoolSnapshot(
        pool="p",
        replicas=ReplicaCounts(current=current, ready=ready, starting=starting),
        classes=classes,
        observed_at_s=NOW_S - age_s,
        scraped_pods=ready,
        in_flight_cap_total=cap_per_pod * ready if ready else None,
        **kw,  # type: ignore[arg-type]
    )
