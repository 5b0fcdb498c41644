"""Invariants of every policy behind the guard: desired within [min, max], steps bounded, and no
scaling on missing or stale data."""

from dataclasses import replace
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st
from sloguard_testing.autoscaling import BATCH, INTERACTIVE, NOW_S, STANDARD, context

from sloguard.api.inferencepool import PoolRole
from sloguard.operator.core.autoscaling import (
    POLICIES,
    ClassSnapshot,
    PoolSnapshot,
    ReplicaCounts,
    ScalingContext,
    ScalingEvent,
    ScalingHistory,
    decide,
)

T = TypeVar("T")
Situation = tuple[ScalingContext, PoolSnapshot, ScalingHistory]


def maybe(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.none() | strategy


counts = st.floats(min_value=0, max_value=5000, allow_nan=False)
fractions = st.floats(min_value=0, max_value=1, allow_nan=False)
seconds = st.floats(min_value=0, max_value=7200, allow_nan=False)


@st.composite
def class_snapshots(draw: st.DrawFn, name: str) -> ClassSnapshot:
    return ClassSnapshot(
        name=name,
        arrival_rate_rps=draw(maybe(counts)),
        queue_depth=draw(maybe(counts)),
        in_flight=draw(maybe(counts)),
        queue_predicted_tokens=draw(maybe(st.floats(min_value=0, max_value=1e8, allow_nan=False))),
        queue_oldest_age_s=draw(maybe(seconds)),
        ttft_p99_s=draw(maybe(seconds)),
        tpot_p99_s=draw(maybe(fractions)),
        attainment=draw(maybe(fractions)),
        output_tokens_mean=draw(maybe(st.floats(min_value=0, max_value=4000, allow_nan=False))),
        output_tokens_std=draw(maybe(st.floats(min_value=0, max_value=4000, allow_nan=False))),
    )


@st.composite
def situations(draw: st.DrawFn) -> Situation:
    lo = draw(st.integers(0, 20))
    hi = draw(st.integers(max(lo, 1), 40))
    role = draw(st.sampled_from(list(PoolRole)))
    ctx = context(role, (INTERACTIVE, STANDARD, BATCH), min_replicas=lo, max_replicas=hi)
    current = draw(st.integers(0, 50))
    ready = draw(st.integers(0, current))
    pods = draw(st.integers(0, ready))
    snap = PoolSnapshot(
        pool="p",
        replicas=ReplicaCounts(current, ready, current - ready),
        classes=tuple(draw(class_snapshots(n)) for n in ("interactive", "standard", "batch")),
        observed_at_s=NOW_S - draw(st.floats(min_value=0, max_value=50)),
        scraped_pods=pods,
        in_flight_cap_total=draw(maybe(counts)),
        kv_usage_mean=draw(maybe(fractions)),
        kv_usage_max=draw(maybe(fractions)),
        preemptions_per_s=draw(maybe(counts)),
        engine_waiting=draw(maybe(counts)),
        generation_tokens_per_s=draw(maybe(st.floats(min_value=0, max_value=1e6, allow_nan=False))),
    )
    last = draw(st.floats(min_value=0, max_value=1000))
    history = ScalingHistory(
        events=(ScalingEvent(NOW_S - last, current, current + draw(st.integers(-3, 3)), "x"),),
        recommendations=tuple(
            (NOW_S - 15.0 * i, draw(st.integers(0, 50))) for i in range(draw(st.integers(0, 30)))
        ),
        per_replica_tokens_per_s=draw(maybe(st.floats(min_value=0, max_value=1e4, allow_nan=False))),
    )
    return ctx, snap, history


@settings(max_examples=150, deadline=None)
@given(situations(), st.sampled_from(sorted(POLICIES)))
def test_desired_within_bounds_and_steps(situation: Situation, name: str) -> None:
    ctx, snap, history = situation
    decision = decide(POLICIES[name](), snap, ctx, history, NOW_S)
    assert ctx.min_replicas <= decision.desired_replicas <= ctx.max_replicas
    assert ctx.min_in_flight <= decision.cap_bounds.min_in_flight <= decision.cap_bounds.max_in_flight
    assert decision.cap_bounds.max_in_flight <= ctx.max_in_flight
    current = snap.replicas.current
    if ctx.min_replicas <= current <= ctx.max_replicas:
        assert -ctx.max_scale_down_step <= decision.desired_replicas - current <= ctx.max_scale_up_step


@settings(max_examples=100, deadline=None)
@given(situations(), st.sampled_from(sorted(POLICIES)), st.sampled_from(["down", "stale", "undated"]))
def test_never_scales_on_missing_data(situation: Situation, name: str, how: str) -> None:
    ctx, snap, history = situation
    if how == "down":
        snap = replace(snap, available=False, unavailable_kind="PrometheusError", unavailable_reason="x")
    elif how == "stale":
        snap = replace(snap, observed_at_s=NOW_S - ctx.tuning.max_metrics_age_s - 1.0)
    else:
        snap = replace(snap, observed_at_s=None)
    decision = decide(POLICIES[name](), snap, ctx, history, NOW_S)
    assert decision.desired_replicas == ctx.clamp(snap.replicas.current)
    assert decision.held_for_metrics
