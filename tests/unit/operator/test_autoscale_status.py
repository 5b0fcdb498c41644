"""The autoscaler's status, Events, restart memory, replica counts, pods and cap bounds, as pure data."""

from typing import Any

import pytest
from sloguard_testing.operator_objects import make_class, make_pool

from sloguard.api.conditions import ConditionStatus, ConditionType
from sloguard.api.inferencepool import InferencePoolStatus
from sloguard.api.sidecar_config import SidecarConfig
from sloguard.operator.core.autoscale_status import (
    autoscaling_status,
    condition_status,
    history_from_status,
    iso_of,
    pod_loads,
    replica_counts,
    scaling_events,
    seconds_of,
)
from sloguard.operator.core.autoscaling import (
    CapBounds,
    ClassAssessment,
    ClassSnapshot,
    DecisionCondition,
    PoolSnapshot,
    ReplicaCounts,
    ScalingDecision,
    ScalingEvent,
)
from sloguard.operator.core.autoscaling.drain import PodLoad
from sloguard.operator.core.cap_bounds import cap_bounds_status, effective_limits, recorded_cap_bounds
from sloguard.operator.core.plan import plan_pool

T, F, U = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN
NOW_S = 1_790_000_000.0
NOW_ISO = iso_of(NOW_S)
JAN_1 = "2026-01-01T00:00:00Z"


def decision(
    from_replicas: int = 2,
    to: int = 4,
    *,
    metrics: ConditionStatus = F,
    at_risk: ConditionStatus = T,
    limited: ConditionStatus = T,
) -> ScalingDecision:
    return ScalingDecision(
        policy="sloguard",
        time_s=NOW_S,
        from_replicas=from_replicas,
        desired_replicas=to,
        recommended_replicas=to,
        reason="scale out to 4: interactive demand 120.0 over cap 10.0/pod",
        cap_bounds=CapBounds(1, 20),
        conditions=(
            DecisionCondition(ConditionType.SLO_AT_RISK, at_risk, "AttainmentBelowTarget", "interactive"),
            DecisionCondition(ConditionType.SCALING_LIMITED, limited, "AtMaxReplicas", "15 wanted"),
            DecisionCondition(
                ConditionType.METRICS_UNAVAILABLE,
                metrics,
                "MetricsMissing" if metrics == T else "MetricsFound",
                "m",
            ),
        ),
        classes=(ClassAssessment("interactive", "interactive", True, attainment=0.8, target=0.99),),
        held_for_metrics=metrics == T,
    )


SNAPSHOT = PoolSnapshot(
    pool="chat",
    replicas=ReplicaCounts(2, 2),
    classes=(ClassSnapshot("interactive", attainment=0.8, ttft_p50_s=0.2, ttft_p99_s=1.0, tpot_p99_s=None),),
    observed_at_s=NOW_S,
)


def test_status_carries_decision_classes_and_keeps_conditions_others_own() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": ""}
    ready["lastTransitionTime"] = "t0"
    old_limited = {"type": "ScalingLimited", "status": "True", "reason": "X", "lastTransitionTime": "t1"}
    status = autoscaling_status(
        {"conditions": [ready, old_limited]}, decision(), SNAPSHOT, generation=3, now_iso=NOW_ISO
    )
    by_type = {c["type"]: c for c in status["conditions"]}
    assert by_type["Ready"] == ready
    assert by_type["ScalingLimited"]["lastTransitionTime"] == "t1"  # status unchanged: time kept
    assert by_type["ScalingLimited"]["reason"] == "AtMaxReplicas"
    assert by_type["SLOAtRisk"]["status"] == "True" and by_type["SLOAtRisk"]["lastTransitionTime"] == NOW_ISO
    assert by_type["MetricsUnavailable"]["status"] == "False"
    assert status["desiredReplicas"] == 4
    assert status["lastScaling"] == {
        "time": NOW_ISO,
        "fromReplicas": 2,
        "toReplicas": 4,
        "reason": decision().reason,
    }
    assert status["classes"] == [
        {"name": "interactive", "attainment": 0.8, "target": 0.99, "ttftP50Ms": 200.0, "ttftP99Ms": 1000.0}
    ]


def test_a_hold_records_no_change_and_keeps_the_last_observations() -> None:
    held = decision(2, 2, metrics=T, at_risk=U, limited=F)
    unavailable = PoolSnapshot("chat", ReplicaCounts(2, 2), available=False)
    status = autoscaling_status({}, held, unavailable, generation=1, now_iso=NOW_ISO)
    assert "lastScaling" not in status and "classes" not in status
    assert status["desiredReplicas"] == 2


@pytest.mark.parametrize(
    ("made", "before", "reasons"),
    [
        (decision(2, 4), None, ["ScaledUp"]),
        (decision(4, 2), None, ["ScaledDown"]),
        (decision(2, 2), None, []),
        (decision(2, 2, metrics=T), None, ["MetricsUnavailable"]),  # turned on
        (decision(2, 2, metrics=T), "True", []),  # still on: no repeat
        (decision(2, 2, metrics=F), "True", ["MetricsAvailable"]),  # turned off
        (decision(2, 2, metrics=F), "False", []),
    ],
)
def test_events(made: ScalingDecision, before: str | None, reasons: list[str]) -> None:
    live = {"conditions": [{"type": "MetricsUnavailable", "status": before}]} if before else {}
    assert condition_status(live, ConditionType.METRICS_UNAVAILABLE) == before
    events = scaling_events(made, before)
    assert [e.reason for e in events] == reasons
    types = {"ScaledUp": "Normal", "ScaledDown": "Normal", "MetricsUnavailable": "Warning"}
    assert all(e.type == types.get(e.reason, "Normal") for e in events)
    if reasons[:1] == ["ScaledDown"]:
        assert events[0].message.startswith("4 → 2 replicas: ")


@pytest.mark.parametrize(
    ("status", "events"),
    [
        (
            {"lastScaling": {"time": JAN_1, "fromReplicas": 2, "toReplicas": 4, "reason": "r"}},
            (ScalingEvent(seconds_of("2026-01-01T00:00:00Z"), 2, 4, "r"),),
        ),
        ({"lastScaling": {"time": "yesterday", "fromReplicas": 2, "toReplicas": 4}}, ()),
        ({"lastScaling": {"time": "2026-01-01T00:00:00Z", "fromReplicas": 3, "toReplicas": 3}}, ()),
        ({}, ()),
        (None, ()),
    ],
)
def test_history_after_a_restart(status: dict[str, Any] | None, events: tuple[ScalingEvent, ...]) -> None:
    history = history_from_status(status)
    assert history.events == events and history.recommendations == ()


def test_time_round_trip() -> None:
    assert seconds_of(iso_of(NOW_S)) == NOW_S
    assert seconds_of("2026-01-01T01:00:00+01:00") == seconds_of("2026-01-01T00:00:00Z")


@pytest.mark.parametrize(
    ("desired", "deployment", "counts"),
    [
        (4, {"status": {"readyReplicas": 2}}, ReplicaCounts(4, 2, 2)),
        (2, {"status": {"readyReplicas": 4}}, ReplicaCounts(2, 4, 0)),  # scaling down: pods still going
        (3, None, ReplicaCounts(3, 0, 3)),
        (1, {"status": {}}, ReplicaCounts(1, 0, 1)),
    ],
)
def test_replica_counts(desired: int, deployment: dict[str, Any] | None, counts: ReplicaCounts) -> None:
    assert replica_counts(desired, deployment) == counts


def test_pod_loads_keep_only_the_pool_pods() -> None:
    def pod(name: str, pool: str, ready: str, **md: Any) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "labels": {"sloguard.dev/pool": pool}, **md},
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        }

    pods = [
        pod("a", "chat", "True"),
        pod("b", "chat", "False"),
        pod("c", "other", "True"),
        pod("d", "chat", "True", deletionTimestamp="2026-01-01T00:00:00Z"),
        {"metadata": {"name": "e", "labels": {"sloguard.dev/pool": "chat"}}},  # no status yet
    ]
    assert pod_loads(pods, {"a": 2.0, "c": 1.0}, {"sloguard.dev/pool": "chat"}) == [
        PodLoad("a", True, 2.0),
        PodLoad("b", False, None),
        PodLoad("d", True, None, terminating=True),
        PodLoad("e", False, None),
    ]


@pytest.mark.parametrize(
    ("recorded", "bounds"),
    [
        (cap_bounds_status(CapBounds(2, 20)), CapBounds(2, 20)),
        ({}, None),
        ({"capBounds": {"minInFlight": 5, "maxInFlight": 2}}, None),  # inverted: the spec rules
    ],
)
def test_cap_bounds_round_trip_through_status(recorded: dict[str, Any], bounds: CapBounds | None) -> None:
    pool = make_pool()
    pool.status = InferencePoolStatus.model_validate(recorded)
    assert recorded_cap_bounds(pool) == bounds


def test_cap_bounds_are_never_written_onto_the_users_object() -> None:
    # They live in status (written with the status subresource), not in metadata.annotations.
    assert set(cap_bounds_status(CapBounds(1, 8))) == {"capBounds"}
    assert InferencePoolStatus.model_validate(cap_bounds_status(CapBounds(1, 8))).cap_bounds is not None


@pytest.mark.parametrize(
    ("enabled", "annotation", "limits"),
    [
        (True, CapBounds(2, 20), (2, 20)),
        (True, CapBounds(1, 500), (1, 64)),  # the spec stays the outer bound
        (True, CapBounds(100, 200), (64, 64)),
        (True, None, (1, 64)),
        (False, CapBounds(2, 20), (1, 64)),  # autoscaling off: the recorded bounds are ignored
    ],
)
def test_cap_bounds_reach_the_sidecar_config_map(
    enabled: bool, annotation: CapBounds | None, limits: tuple[int, int]
) -> None:
    spec: dict[str, Any] = {
        "sidecar": {"limits": {"minInFlight": 1, "maxInFlight": 64}},
        "autoscaling": {"enabled": enabled, "prometheusUrl": "http://prometheus:9090"},
    }
    pool = make_pool(**spec)
    if annotation is not None:
        pool.status = InferencePoolStatus.model_validate(cap_bounds_status(annotation))
    got = effective_limits(pool)
    assert (got.min_in_flight, got.max_in_flight) == limits
    plan = plan_pool(pool, {"interactive": make_class().model_dump(by_alias=True)})
    (cm,) = [c for c in plan.children if c["kind"] == "ConfigMap"]
    config = SidecarConfig.model_validate_json(cm["data"]["sidecar.json"])
    assert (config.limits.min_in_flight, config.limits.max_in_flight) == limits
