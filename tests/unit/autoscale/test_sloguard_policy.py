"""SLOGuard's policy: interactive backpressure, start-up-aware batch deadlines, roles and local caps.

Numbers in the comments are worked by hand: cap 10 per pod at u* = 0.8 (headroom 0.25) is 8 requests
of concurrency per replica; batch throughput 500 tokens/s per replica; z(0.99) = 2.326.
"""

import pytest
from sloguard_testing.autoscaling import (
    BATCH,
    INTERACTIVE,
    NOW_S,
    batch,
    context,
    interactive,
    snapshot,
)

from sloguard.api.conditions import ConditionStatus, ConditionType
from sloguard.api.inferencepool import PoolRole
from sloguard.operator.core.autoscaling import (
    ChironPolicy,
    ClassSnapshot,
    PoolSnapshot,
    Recommendation,
    ScalingContext,
    ScalingHistory,
    SLOGuardPolicy,
    decide,
)
from sloguard.operator.core.autoscaling.waiting_time import replicas_to_drain

POLICY = SLOGuardPolicy()
BATCH_POOL = context(PoolRole.BATCH, (BATCH,), min_replicas=0)
MIXED_POOL = context(PoolRole.MIXED, (INTERACTIVE, BATCH))


def two_ready(*classes: ClassSnapshot, tokens_per_s: float = 1000.0) -> PoolSnapshot:
    return snapshot(*classes, current=2, generation_tokens_per_s=tokens_per_s)


def recommend(
    snap: PoolSnapshot, ctx: ScalingContext | None = None, history: ScalingHistory | None = None
) -> Recommendation:
    return POLICY.recommend(snap, ctx or context(), history or ScalingHistory(), NOW_S)


def test_replicas_still_starting_are_not_added_again() -> None:
    # 4 ready pods carry 40 in flight: need 40/8 = 5, already asked for 6 (2 starting).
    starting = snapshot(interactive(40), current=6, starting=2)
    assert recommend(starting).replicas == 6
    # Attainment one error budget under target while busy: ready + max(1, 0.5·1·4) = 6 = current.
    missing = snapshot(interactive(40, attainment=0.98), current=6, starting=2)
    assert recommend(missing).replicas == 6
    # The same load with nothing starting does scale out.
    assert recommend(snapshot(interactive(40, attainment=0.98), current=4)).replicas == 6


def test_attainment_miss_on_an_idle_pool_is_at_risk_but_does_not_scale() -> None:
    snap = snapshot(interactive(8, attainment=0.9))  # utilisation 0.2, no queue, TTFT fine
    decision = decide(POLICY, snap, context(), ScalingHistory(), NOW_S)
    assert decision.desired_replicas == 4
    assert "not capacity-bound" in decision.reason
    cond = decision.condition(ConditionType.SLO_AT_RISK)
    assert cond is not None and (cond.status, cond.reason) == (ConditionStatus.TRUE, "AttainmentBelowTarget")


def test_ttft_tail_over_target_makes_an_attainment_miss_capacity_bound() -> None:
    snap = snapshot(interactive(8, attainment=0.9, ttft_p99_s=0.9))
    assert recommend(snap).replicas == 8  # ready 4 + min(1, 0.5·10)·4


def test_kv_thrash_adds_a_replica_and_caps_the_sidecars_where_it_thrashes() -> None:
    snap = snapshot(interactive(24), kv_usage_max=0.95, preemptions_per_s=0.5)
    rec = recommend(snap)
    assert rec.replicas == 5  # need 24/8 = 3 < ready + 1
    assert (rec.cap_bounds.min_in_flight, rec.cap_bounds.max_in_flight) == (1, 6)  # 24 in flight / 4 pods
    calm = recommend(snapshot(interactive(24), kv_usage_max=0.95, preemptions_per_s=0.0))
    assert (calm.cap_bounds.max_in_flight, calm.replicas) == (16, 4)


def test_rising_arrivals_are_projected_over_the_start_up_time() -> None:
    # A ramp 10 → 15 → 20 rps, 30 s apart: 20 + (5/30)·120 = 40, capped at ×1.5; demand 32 → 32·1.5/8 = 6.
    ramp = ScalingHistory(arrival_rates=((NOW_S - 60, 10.0), (NOW_S - 30, 15.0)))
    now = snapshot(interactive(32, arrival_rate_rps=20.0))
    assert recommend(now, history=ramp).replicas == 6
    assert recommend(now).replicas == 4
    # A single step (flat, flat, flat, jump): the median slope is 0, nothing is projected.
    step = ScalingHistory(arrival_rates=((NOW_S - 90, 10.0), (NOW_S - 60, 10.0), (NOW_S - 30, 10.0)))
    assert recommend(now, history=step).replicas == 4
    falling = ScalingHistory(arrival_rates=((NOW_S - 60, 30.0), (NOW_S - 30, 25.0)))
    assert recommend(now, history=falling).replicas == 4


def test_missing_interactive_concurrency_holds() -> None:
    rec = recommend(snapshot(interactive(None, None)))  # type: ignore[arg-type]
    assert rec.replicas == 4 and "no interactive concurrency data" in rec.reason


# Batch: 2 ready replicas at 1000 tokens/s in all → 500 tokens/s each.
@pytest.mark.parametrize(
    ("case", "snap", "desired", "at_risk"),
    [
        # 10k × 100 tokens (+2.326·50·√10k) = 1,011,632 tokens; 1012 s on 2 replicas vs 3235 s left: fine,
        # and 0.75 replicas would do even with hysteresis → scale in to 1.
        ("deadline comfortably met", two_ready(batch(10_000)), 1, False),
        # 50k requests: 5,026,007 tokens, 5026 s on 2 > 3235 s: 2 ready + (5,026,007 − 2·500·3235)/(500·3115).
        ("deadline would be missed", two_ready(batch(50_000)), 4, True),
        ("empty queue scales to the floor", two_ready(batch(0), tokens_per_s=1.0), 0, False),
        # No throughput measured yet and nothing running: get one replica to serve the backlog.
        ("scale from zero", snapshot(batch(100), current=0), 1, False),
    ],
)
def test_batch_deadlines(case: str, snap: PoolSnapshot, desired: int, at_risk: bool) -> None:
    rec = recommend(snap, BATCH_POOL)
    assert rec.replicas == desired, rec.reason
    assert any(c.at_risk for c in rec.classes) == at_risk


def test_batch_start_up_time_makes_sloguard_ask_more_than_chiron() -> None:
    # Oldest request waited 2400 s: 3600 − 2400 − 360 margin − 5 s service = 835 s left, 1 ready replica.
    # 8000 × 100 + 2.326·50·√8000 = 810,402 tokens. Chiron: 810,402 / (500·835) = 1.94 → 2 replicas.
    # SLOGuard: new replicas produce after 120 s: 1 + (810,402 − 500·835) / (500·715) = 2.10 → 3.
    snap = snapshot(batch(8000, age_s=2400.0), current=1, generation_tokens_per_s=500.0)
    assert recommend(snap, BATCH_POOL).replicas == 3
    assert ChironPolicy().recommend(snap, BATCH_POOL, ScalingHistory(), NOW_S).replicas == 2


def test_too_late_for_new_replicas_asks_for_the_maximum_and_says_why() -> None:
    snap = snapshot(batch(8000, age_s=3200.0), current=1, generation_tokens_per_s=500.0)
    decision = decide(POLICY, snap, BATCH_POOL, ScalingHistory(), NOW_S)
    assert (decision.recommended_replicas, decision.desired_replicas) == (10, 5)  # max, then +4 step
    assert "too late for new replicas" in decision.classes[0].note
    cond = decision.condition(ConditionType.SLO_AT_RISK)
    assert cond is not None and cond.reason == "DeadlineAtRisk"


def test_batch_scale_in_keeps_pace_with_batch_arrivals() -> None:
    # Empty queue, but 20 rps × 100 tokens = 2000 tokens/s arrive: 4 replicas at 500 tokens/s keep pace.
    snap = snapshot(batch(0, arrival_rate_rps=20.0), current=6, generation_tokens_per_s=1500.0)
    history = ScalingHistory(per_replica_tokens_per_s=500.0)
    assert recommend(snap, BATCH_POOL, history).replicas == 4


def test_roles_interactive_pool_absorbs_no_batch() -> None:
    late_batch = batch(50_000)
    snap = snapshot(interactive(16), late_batch, current=2, generation_tokens_per_s=1000.0)
    interactive_pool = context(PoolRole.INTERACTIVE, (INTERACTIVE, BATCH))
    rec = recommend(snap, interactive_pool)
    assert rec.replicas == 2 and "absorbs no batch" in rec.reason
    assert all(c.kind == "interactive" for c in rec.classes)


def test_roles_mixed_pool_lets_batch_fill_spare_capacity_only() -> None:
    # Interactive needs 48/8 = 6 replicas of 4 ready: nothing is spare for batch, which must then get
    # 0 + 1,011,632 / (500 · 3115) = 0.65 new replicas → 6.65 → 7 in a mixed pool.
    snap = snapshot(interactive(48), batch(10_000), current=4, generation_tokens_per_s=2000.0)
    assert recommend(snap, MIXED_POOL).replicas == 7
    assert recommend(snap, context(PoolRole.INTERACTIVE, (INTERACTIVE, BATCH))).replicas == 6
    # With spare capacity (interactive needs 2 of 4), the same backlog fits: hold, no scale-in below
    # interactive 2.4 + batch (with hysteresis) 0.75/… → 4.
    quiet = snapshot(interactive(16), batch(10_000), current=4, generation_tokens_per_s=2000.0)
    assert recommend(quiet, MIXED_POOL).replicas == 4


def test_batch_pool_ignores_interactive_backpressure() -> None:
    snap = snapshot(interactive(400, 100), batch(0), current=2, generation_tokens_per_s=1000.0)
    rec = recommend(snap, context(PoolRole.BATCH, (INTERACTIVE, BATCH)))
    assert rec.replicas == 0 and "served best-effort" in rec.reason


@pytest.mark.parametrize(
    ("tokens", "available_s", "ready", "expected"),
    [
        (0.0, 100.0, 0.0, 0.0),
        (50_000.0, 100.0, 2.0, 1.0),  # 500 tok/s × 100 s per replica: one is enough
        (250_000.0, 100.0, 2.0, 2.0 + 150_000.0 / (500.0 * 40.0)),  # start-up 60 s leaves 40 s
        (250_000.0, 50.0, 2.0, None),  # new replicas would come too late
        (1.0, 0.0, 2.0, None),
    ],
)
def test_replicas_to_drain(tokens: float, available_s: float, ready: float, expected: float | None) -> None:
    got = replicas_to_drain(
        tokens=tokens, available_s=available_s, ready=ready, tokens_per_s_per_replica=500.0, startup_s=60.0
    )
    assert got == (None if expected is None else pytest.approx(expected))


def test_a_vanishing_throughput_saturates_instead_of_overflowing() -> None:
    snap = snapshot(batch(0, arrival_rate_rps=3498.0, tokens_mean=12.0), current=0, ready=0)
    history = ScalingHistory(per_replica_tokens_per_s=2.3e-304)
    assert (
        recommend(snap, BATCH_POOL, history).replicas == 0
    )  # empty queue: no scale-out, floor only on the way in
    decision = decide(POLICY, snapshot(batch(10, tokens_mean=12.0), current=1), BATCH_POOL, history, NOW_S)
    assert BATCH_POOL.min_replicas <= decision.desired_replicas <= BATCH_POOL.max_replicas


class _Broken:
    name = "broken"

    def recommend(
        self, snapshot: PoolSnapshot, context: ScalingContext, history: ScalingHistory, now_s: float
    ) -> Recommendation:
        raise ValueError("replica need is NaN")


def test_a_policy_failing_on_its_inputs_holds_and_says_so() -> None:
    decision = decide(_Broken(), snapshot(interactive(40, 8)), context(), ScalingHistory(), NOW_S)
    assert decision.desired_replicas == 4 and decision.held_for_metrics
    cond = decision.condition(ConditionType.METRICS_UNAVAILABLE)
    assert cond is not None and (cond.status, cond.reason) == (ConditionStatus.TRUE, "MetricsInvalid")
