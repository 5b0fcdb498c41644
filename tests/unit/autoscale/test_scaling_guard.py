"""The shared guard: no data or stale data holds, bounds win, cooldowns, stabilisation and step limits."""

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from sloguard_testing.autoscaling import NOW_S, context, interactive, snapshot

from sloguard.api.conditions import ConditionStatus, ConditionType
from sloguard.api.inferencepool import InferencePool, PoolRole
from sloguard.api.sidecar_config import SLOClassConfig
from sloguard.api.sloclass import SLOClass
from sloguard.operator.core.autoscaling import (
    ClassKind,
    PoolSnapshot,
    ScalingContext,
    ScalingDecision,
    ScalingEvent,
    ScalingHistory,
    SLOGuardPolicy,
    decide,
)

POLICY = SLOGuardPolicy()


def covered(replicas: int, *, span_s: float = 400.0) -> ScalingHistory:
    """A history whose recommendations cover the scale-down window with the same value."""
    times = [NOW_S - span_s + 15.0 * i for i in range(int(span_s // 15))]
    return ScalingHistory(recommendations=tuple((t, replicas) for t in times))


def status_of(decision: ScalingDecision, type_: ConditionType) -> tuple[ConditionStatus, str]:
    cond = decision.condition(type_)
    assert cond is not None
    return cond.status, cond.reason


# (case, snapshot, history, context overrides, desired, limited_by)
CASES = [
    ("scale out on demand", snapshot(interactive(40, 8)), ScalingHistory(), {}, 6, ""),
    ("hysteresis holds in the dead band", snapshot(interactive(24)), covered(3), {}, 4, ""),
    ("scale in after a quiet window", snapshot(interactive(16)), covered(3), {}, 3, ""),
    ("scale in one step at a time", snapshot(interactive(0)), covered(1), {}, 3, "ScaleDownStepLimit"),
    (
        "scale-down cooldown after a change",
        snapshot(interactive(16)),
        replace(covered(3), events=(ScalingEvent(NOW_S - 100, 3, 4, "up"),)),
        {},
        4,
        "ScaleDownCooldown",
    ),
    ("no history: stabilise first", snapshot(interactive(16)), ScalingHistory(), {}, 4, "Stabilising"),
    (
        "a high recommendation in the window blocks scale-in",
        snapshot(interactive(16)),
        ScalingHistory(recommendations=((NOW_S - 400, 3), (NOW_S - 100, 5))),
        {},
        4,
        "Stabilising",
    ),
    (
        "scale-up cooldown",
        snapshot(interactive(40, 8)),
        ScalingHistory(events=(ScalingEvent(NOW_S - 10, 2, 4, "up"),)),
        {},
        4,
        "ScaleUpCooldown",
    ),
    ("scale-up step limit", snapshot(interactive(100)), ScalingHistory(), {}, 8, "ScaleUpStepLimit"),
    ("max bound", snapshot(interactive(100)), ScalingHistory(), {"max_replicas": 5}, 5, "AtMaxReplicas"),
    ("min bound", snapshot(interactive(0)), covered(1), {"min_replicas": 4}, 4, "AtMinReplicas"),
    (
        "current above a lowered max goes straight into bounds",
        snapshot(interactive(100), current=6),
        ScalingHistory(events=(ScalingEvent(NOW_S - 1, 5, 6, "up"),)),
        {"max_replicas": 3},
        3,
        "AtMaxReplicas",
    ),
]


@pytest.mark.parametrize("row", CASES, ids=[row[0] for row in CASES])
def test_guard_table(row: tuple[str, PoolSnapshot, ScalingHistory, dict[str, Any], int, str]) -> None:
    _, snap, history, overrides, desired, limited_by = row
    decision = decide(POLICY, snap, context(**overrides), history, NOW_S)
    assert (decision.desired_replicas, decision.limited_by) == (desired, limited_by), decision.reason
    assert status_of(decision, ConditionType.METRICS_UNAVAILABLE)[0] == ConditionStatus.FALSE
    scaling_limited = status_of(decision, ConditionType.SCALING_LIMITED)
    assert scaling_limited == (
        (ConditionStatus.TRUE, limited_by) if limited_by else (ConditionStatus.FALSE, "DesiredWithinRange")
    )


@pytest.mark.parametrize(
    ("case", "snap", "kind"),
    [
        (
            "prometheus error",
            replace(
                snapshot(interactive(100)),
                available=False,
                unavailable_kind="PrometheusError",
                unavailable_reason="connection refused",
            ),
            "PrometheusError",
        ),
        ("stale samples", snapshot(interactive(100), age_s=120.0), "MetricsStale"),
        ("no sample time", replace(snapshot(interactive(100)), observed_at_s=None), "MetricsMissing"),
        (
            "no series",
            replace(snapshot(), available=False, unavailable_kind="MetricsMissing", unavailable_reason="-"),
            "MetricsMissing",
        ),
    ],
)
def test_no_or_stale_data_holds_and_says_so(case: str, snap: PoolSnapshot, kind: str) -> None:
    decision = decide(POLICY, snap, context(), ScalingHistory(), NOW_S)
    assert decision.desired_replicas == snap.replicas.current == 4
    assert decision.held_for_metrics
    assert status_of(decision, ConditionType.METRICS_UNAVAILABLE) == (ConditionStatus.TRUE, kind)
    assert status_of(decision, ConditionType.SLO_AT_RISK)[0] == ConditionStatus.UNKNOWN
    assert "holding at 4" in decision.reason


def test_stale_data_still_respects_a_lowered_max() -> None:
    stale = snapshot(current=6, age_s=600.0)
    decision = decide(POLICY, stale, context(max_replicas=3), ScalingHistory(), NOW_S)
    assert (decision.desired_replicas, decision.limited_by) == (3, "AtMaxReplicas")


def test_history_records_changes_and_recommendations_but_not_holds_for_metrics() -> None:
    history = ScalingHistory()
    up = decide(POLICY, snapshot(interactive(40, 8)), context(), history, NOW_S)
    history = history.after(up)
    assert history.last_time(up=True) == NOW_S and history.recommendations == ((NOW_S, 6),)
    held = decide(POLICY, snapshot(age_s=999.0), context(), history, NOW_S + 15)
    assert history.after(held).recommendations == history.recommendations
    assert history.after(held).events == history.events


def test_context_from_the_example_pool_and_classes(repo_root: Path) -> None:
    docs = list(yaml.safe_load_all((repo_root / "examples" / "sloclasses.yaml").read_text()))
    classes = [SLOClassConfig.from_resource(SLOClass.model_validate(d)) for d in docs]
    pool = InferencePool.model_validate(
        yaml.safe_load((repo_root / "examples" / "inferencepool.yaml").read_text())
    )
    ctx = ScalingContext.from_spec(pool.spec, classes)
    assert (ctx.min_replicas, ctx.max_replicas, ctx.role) == (1, 8, PoolRole.MIXED)
    assert (ctx.interval_s, ctx.scale_up_cooldown_s, ctx.scale_down_cooldown_s) == (15.0, 30.0, 300.0)
    assert (ctx.max_scale_up_step, ctx.max_scale_down_step, ctx.headroom) == (4, 1, 0.2)
    assert (ctx.startup_time_s, ctx.min_in_flight, ctx.max_in_flight) == (240.0, 4, 256)
    assert [c.name for c in ctx.classes_of(ClassKind.BATCH)] == ["batch"]
    assert [c.name for c in ctx.classes_of(ClassKind.INTERACTIVE)] == ["interactive", "standard"]
