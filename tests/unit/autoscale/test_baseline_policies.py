"""The threshold baseline (KV 0.8 / queue 5, HPA arithmetic) and the Chiron reconstruction."""

import pytest
from sloguard_testing.autoscaling import NOW_S, context, interactive, snapshot

from sloguard.operator.core.autoscaling import (
    POLICIES,
    ChironPolicy,
    PoolSnapshot,
    ScalingHistory,
    ThresholdPolicy,
    decide,
)


@pytest.mark.parametrize(
    ("case", "snap", "replicas"),
    [
        ("KV over target: ceil(4 · 0.96/0.8)", snapshot(interactive(10), kv_usage_mean=0.96), 5),
        ("queue over target: ceil((30 + 10) / 5)", snapshot(interactive(10, 30), engine_waiting=10.0), 8),
        ("both: the larger wins", snapshot(interactive(10, 30), kv_usage_mean=0.96, engine_waiting=10.0), 8),
        ("under target, within the 10% tolerance", snapshot(interactive(10), kv_usage_mean=0.75), 4),
        ("at the threshold: one more", snapshot(interactive(10), kv_usage_mean=0.82), 5),
        ("queue 5 per pod: one more", snapshot(interactive(10, 20), kv_usage_mean=0.5), 5),
        ("low KV, no queue: scale in", snapshot(interactive(10), kv_usage_mean=0.4, engine_waiting=0.0), 2),
        ("no series: hold", snapshot(interactive(None, None)), 4),  # type: ignore[arg-type]
        # 4 ready + 2 starting: KV asks for 5, already 6 asked for: keep 6 rather than cancel the start.
        ("starting pods are kept", snapshot(interactive(10), current=6, starting=2, kv_usage_mean=0.96), 6),
    ],
)
def test_threshold_policy(case: str, snap: PoolSnapshot, replicas: int) -> None:
    rec = ThresholdPolicy().recommend(snap, context(), ScalingHistory(), NOW_S)
    assert rec.replicas == replicas, rec.reason


@pytest.mark.parametrize(
    ("case", "snap", "replicas"),
    [
        # B = 10; 4 ready. u = 36/40 = 0.9 > 0.8: ceil(36/10) = 4, + ceil(4 · 0.25) = 5.
        ("utilisation over U_hi", snapshot(interactive(36)), 5),
        ("TTFT p99 over target", snapshot(interactive(20, ttft_p99_s=0.8)), 5),
        ("utilisation between U_lo and U_hi: hold", snapshot(interactive(24)), 4),
        ("utilisation under U_lo: one fewer", snapshot(interactive(8)), 3),
    ],
)
def test_chiron_policy(case: str, snap: PoolSnapshot, replicas: int) -> None:
    rec = ChironPolicy().recommend(snap, context(), ScalingHistory(), NOW_S)
    assert rec.replicas == replicas, rec.reason


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_goes_through_the_same_guard(name: str) -> None:
    policy = POLICIES[name]()
    stale = decide(policy, snapshot(interactive(100, 50), age_s=500.0), context(), ScalingHistory(), NOW_S)
    assert stale.held_for_metrics and stale.desired_replicas == 4 and stale.policy == name
    overloaded = snapshot(interactive(400, 50), kv_usage_mean=0.99)
    busy = decide(policy, overloaded, context(), ScalingHistory(), NOW_S)
    assert busy.desired_replicas == 8 and busy.limited_by == "ScaleUpStepLimit"
