"""Pool status, SLOClass checks, drift detection, planning and settings: the rest of the pure core."""

from decimal import Decimal
from typing import Any

import pytest
from sloguard_testing.operator_objects import make_class, make_pool

from sloguard.api.conditions import ConditionType
from sloguard.api.inferencepool import InferencePoolStatus
from sloguard.operator.core.config import OperatorConfig
from sloguard.operator.core.drift import (
    APPLIED_DIGEST_ANNOTATION,
    declared_in,
    manifest_digest,
    needs_apply,
    quantity_value,
    with_digest,
)
from sloguard.operator.core.plan import parse_pool, plan_pool
from sloguard.operator.core.sloclass_checks import acceptance, pools_using, sloclass_status
from sloguard.operator.core.status import Problem, condition_of, pool_status

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


def deployment(
    *,
    generation: int = 1,
    observed: int = 1,
    replicas: int,
    ready: int,
    updated: int | None = None,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": replicas if updated is None else updated,
            "conditions": conditions or [],
        },
    }


def reasons(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


# (description, pool spec, deployment, problem, expected {type: (status, reason)})
STATUS_CASES = [
    (
        "no deployment yet",
        {"replicas": 2},
        None,
        None,
        {
            "Ready": ("False", "NoReplicaReady"),
            "Progressing": ("True", "RollingOut"),
            "Degraded": ("False", "AsExpected"),
        },
    ),
    (
        "all ready",
        {"replicas": 2},
        deployment(replicas=2, ready=2),
        None,
        {
            "Ready": ("True", "AllReplicasReady"),
            "Progressing": ("False", "RolloutComplete"),
            "Degraded": ("False", "AsExpected"),
        },
    ),
    (
        "partly ready",
        {"replicas": 3},
        deployment(replicas=3, ready=1),
        None,
        {"Ready": ("True", "SomeReplicasReady"), "Progressing": ("True", "RollingOut")},
    ),
    (
        "controller behind",
        {"replicas": 1},
        deployment(generation=2, observed=1, replicas=1, ready=1),
        None,
        {"Progressing": ("True", "RollingOut")},
    ),
    (
        "old pods still updating",
        {"replicas": 2},
        deployment(replicas=2, ready=2, updated=1),
        None,
        {"Progressing": ("True", "RollingOut")},
    ),
    (
        "scaled to zero",
        {"replicas": 0, "minReplicas": 0},
        deployment(replicas=0, ready=0),
        None,
        {"Ready": ("False", "ScaledToZero"), "Progressing": ("False", "RolloutComplete")},
    ),
    (
        "missing class",
        {},
        None,
        Problem("SLOClassNotFound", "SLOClass not found: x"),
        {
            "Ready": ("False", "SLOClassNotFound"),
            "Degraded": ("True", "SLOClassNotFound"),
            "Progressing": ("False", "SLOClassNotFound"),
        },
    ),
    (
        "problem while pods still serve",
        {"replicas": 1},
        deployment(replicas=1, ready=1),
        Problem("ApplyFailed", "500"),
        {"Ready": ("True", "AllReplicasReady"), "Degraded": ("True", "ApplyFailed")},
    ),
    (
        "progress deadline",
        {"replicas": 1},
        deployment(
            replicas=1,
            ready=0,
            conditions=[
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": "slow",
                }
            ],
        ),
        None,
        {"Degraded": ("True", "ProgressDeadlineExceeded")},
    ),
    (
        "replica failure",
        {"replicas": 1},
        deployment(
            replicas=0, ready=0, conditions=[{"type": "ReplicaFailure", "status": "True", "message": "quota"}]
        ),
        None,
        {"Degraded": ("True", "ReplicaFailure")},
    ),
]


@pytest.mark.parametrize(
    ("spec", "dep", "problem", "expected"), [c[1:] for c in STATUS_CASES], ids=[c[0] for c in STATUS_CASES]
)
def test_pool_conditions(
    spec: dict[str, Any],
    dep: dict[str, Any] | None,
    problem: Problem | None,
    expected: dict[str, tuple[str, str]],
) -> None:
    status = pool_status(make_pool(**spec), deployment=dep, problem=problem, now_iso=NOW)
    assert expected.items() <= reasons(status).items()


def test_status_carries_counts_selector_and_generation() -> None:
    status = pool_status(
        make_pool(replicas=3), deployment=deployment(replicas=3, ready=2), problem=None, now_iso=NOW
    )
    assert status["observedGeneration"] == 3
    assert (status["replicas"], status["readyReplicas"], status["desiredReplicas"]) == (3, 2, 3)
    assert status["selector"] == "sloguard.dev/pool=llama"
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])


def test_transition_time_moves_only_when_a_condition_flips_and_foreign_conditions_survive() -> None:
    pool = make_pool(replicas=1)
    first = pool_status(pool, deployment=deployment(replicas=1, ready=0), problem=None, now_iso=NOW)
    foreign = {
        "type": "SLOAtRisk",
        "status": "True",
        "reason": "Below",
        "message": "",
        "lastTransitionTime": NOW,
    }
    pool.status = InferencePoolStatus.model_validate({"conditions": [*first["conditions"], foreign]})
    second = pool_status(pool, deployment=deployment(replicas=1, ready=1), problem=None, now_iso=LATER)
    times = {c["type"]: c["lastTransitionTime"] for c in second["conditions"]}
    assert times["Degraded"] == NOW  # unchanged status keeps its time
    assert times["Ready"] == LATER  # flipped
    assert condition_of(second, ConditionType.SLO_AT_RISK) is not None


@pytest.mark.parametrize(
    ("declared", "live", "expected"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),  # server-added fields are ignored
        ({"a": 1}, {"a": 2}, False),
        ({"a": {"b": [1, 2]}}, {"a": {"b": [1, 2], "c": 0}}, True),
        ({"a": [1, 2]}, {"a": [1]}, False),  # lists must match in length
        ({"a": [{"x": 1}]}, {"a": [{"x": 1, "protocol": "TCP"}]}, True),
        ({"a": True}, {"a": 1}, False),  # bool is not int
        ({"a": "1"}, {"a": 1}, False),
        ({"a": 1}, {}, False),
        ({"a": {}}, {"a": None}, True),  # an empty map reads back as nothing
        ({"a": 1, "env": []}, {"a": 1}, True),  # the API server drops empty lists and maps
        ({"a": 1, "labels": {}}, {"a": 1}, True),
        ({"env": [{"name": "X"}]}, {}, False),
        (
            {"resources": {"requests": {"memory": "1024Mi"}}},
            {"resources": {"requests": {"memory": "1Gi"}}},
            True,
        ),
        ({"resources": {"limits": {"cpu": 2}}}, {"resources": {"limits": {"cpu": "2"}}}, True),
        ({"resources": {"limits": {"cpu": "500m"}}}, {"resources": {"limits": {"cpu": "0.5"}}}, True),
        ({"resources": {"limits": {"cpu": "1"}}}, {"resources": {"limits": {"cpu": "2"}}}, False),
        ({"emptyDir": {"sizeLimit": "64Mi"}}, {"emptyDir": {"sizeLimit": "65536Ki"}}, True),
        ({"image": "1Gi"}, {"image": "1024Mi"}, False),  # quantities only where quantities live
    ],
)
def test_declared_in(declared: Any, live: Any, expected: bool) -> None:
    assert declared_in(declared, live) is expected


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1Gi", Decimal(2**30)), ("500m", Decimal("0.5")), (8, Decimal(8)), ("1e3", Decimal(1000)), ("x", None)],
)
def test_quantity_value(raw: Any, value: Decimal | None) -> None:
    assert quantity_value(raw) == value


def test_needs_apply_sees_a_removed_field_an_edit_and_nothing_else() -> None:
    manifest = {"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"a": 1, "env": [], "b": {"c": 2}}}
    desired = with_digest(manifest)
    assert desired["metadata"]["annotations"][APPLIED_DIGEST_ANNOTATION] == manifest_digest(desired)
    live = {**desired, "spec": {"a": 1, "b": {"c": 2}}, "status": {"replicas": 1}}  # empty list dropped
    assert not needs_apply(desired, live)
    assert needs_apply(desired, None)
    assert needs_apply(desired, {**live, "spec": {"a": 2, "b": {"c": 2}}})  # hand edit
    removed = with_digest({**manifest, "spec": {"a": 1, "env": []}})  # spec.b dropped from the pool spec
    assert needs_apply(removed, live)  # the digest differs, so the apply runs and prunes spec.b


def class_body(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"ttft": "500ms", "tpot": "50ms", **spec}}


PLAN_CASES = [
    ("ok", ["a"], {"a": class_body("a")}, None),
    ("missing", ["a", "b"], {"a": class_body("a")}, "SLOClassNotFound"),
    ("unparsable class", ["a"], {"a": class_body("a", ttft="soon")}, "InvalidSLOClass"),
    (
        "two defaults",
        ["a", "b"],
        {"a": class_body("a", default=True), "b": class_body("b", default=True)},
        "InvalidSLOClasses",
    ),
]


@pytest.mark.parametrize(
    ("names", "classes", "reason"), [c[1:] for c in PLAN_CASES], ids=[c[0] for c in PLAN_CASES]
)
def test_plan(names: list[str], classes: dict[str, dict[str, Any]], reason: str | None) -> None:
    plan = plan_pool(make_pool(sloClasses=names), classes)
    if reason is None:
        assert plan.problem is None
        assert [c["kind"] for c in plan.children] == [
            "ConfigMap",
            "Deployment",
            "Service",
            "Service",
            "PodDisruptionBudget",
        ]
    else:
        assert plan.problem is not None and plan.problem.reason == reason
        assert plan.children == []


def test_parse_pool_reports_the_field() -> None:
    with pytest.raises(ValueError, match=r"spec\.engine"):
        parse_pool({"metadata": {"name": "x"}, "spec": {"model": "m", "sloClasses": ["a"]}})


ACCEPT_CASES = [
    ("valid", make_class("a"), [], [], (True, "Valid")),
    (
        "window shorter than the deadline",
        make_class("a", deadline="1h", attainment={"window": "5m"}),
        [],
        [],
        (False, "AttainmentWindowTooShort"),
    ),
    (
        "window shorter than ttft",
        make_class("a", ttft="10m", attainment={"window": "5m"}),
        [],
        [],
        (False, "AttainmentWindowTooShort"),
    ),
    (
        "two defaults in one pool",
        make_class("a", default=True),
        [make_pool(sloClasses=["a", "b"])],
        [make_class("b", default=True)],
        (False, "ConflictingDefault"),
    ),
    (
        "two defaults in different pools",
        make_class("a", default=True),
        [make_pool(sloClasses=["a"]), make_pool(sloClasses=["b"])],
        [make_class("b", default=True)],
        (True, "Valid"),
    ),
]


@pytest.mark.parametrize(
    ("cls", "pools", "others", "expected"), [c[1:] for c in ACCEPT_CASES], ids=[c[0] for c in ACCEPT_CASES]
)
def test_acceptance(cls: Any, pools: list[Any], others: list[Any], expected: tuple[bool, str]) -> None:
    accepted, reason, _ = acceptance(cls, pools=pools, classes=[cls, *others])
    assert (accepted, reason) == expected


def test_sloclass_status_lists_pools_and_flags_bad_specs() -> None:
    pools = [make_pool(sloClasses=["a"]), make_pool(sloClasses=["b"])]
    good = sloclass_status(
        {**class_body("a"), "metadata": {"name": "a", "generation": 2}}, pools=pools, classes=[], now_iso=NOW
    )
    assert good["pools"] == ["serving/llama"]
    assert good["observedGeneration"] == 2
    assert good["conditions"][0]["reason"] == "Valid"
    bad = sloclass_status(class_body("c", tpot="0s"), pools=pools, classes=[], now_iso=NOW)
    assert (bad["conditions"][0]["status"], bad["conditions"][0]["reason"]) == ("False", "InvalidSpec")
    assert "tpot" in bad["conditions"][0]["message"]
    assert pools_using("b", pools) == ["serving/llama"]


def test_config_from_env() -> None:
    cfg = OperatorConfig.from_env({"SLOGUARD_RESYNC_INTERVAL_S": "2.5", "SLOGUARD_APISERVER_URL": "http://x"})
    assert (cfg.resync_interval_s, cfg.apiserver_url, cfg.retry_delay_s) == (2.5, "http://x", 5.0)
    assert cfg.watch_client_timeout_s > cfg.watch_server_timeout_s
    with pytest.raises(ValueError, match="SLOGUARD_RETRY_DELAY_S"):
        OperatorConfig.from_env({"SLOGUARD_RETRY_DELAY_S": "soon"})
    # An integer: kopf sends it as the watch's timeoutSeconds, and the API server refuses "300.0".
    timeout = OperatorConfig.from_env({"SLOGUARD_WATCH_SERVER_TIMEOUT_S": "120"}).watch_server_timeout_s
    assert timeout == 120 and isinstance(timeout, int)
    with pytest.raises(ValueError, match="whole number"):
        OperatorConfig.from_env({"SLOGUARD_WATCH_SERVER_TIMEOUT_S": "300.0"})


def test_the_sidecar_image_is_an_operator_setting() -> None:
    from sloguard.operator.core.children import DEFAULT_SIDECAR_IMAGE

    assert OperatorConfig.from_env({}).sidecar_image == DEFAULT_SIDECAR_IMAGE
    cfg = OperatorConfig.from_env({"SLOGUARD_SIDECAR_IMAGE": "registry.example.com/sloguard:1.0"})
    assert cfg.sidecar_image == "registry.example.com/sloguard:1.0"


def test_written_statuses_pass_the_crd_schemas() -> None:
    from sloguard_testing.crd_validation import validate_resource

    pool = make_pool(replicas=2)
    for problem in (None, Problem("SLOClassNotFound", "SLOClass not found: x")):
        status = pool_status(pool, deployment=deployment(replicas=2, ready=1), problem=problem, now_iso=NOW)
        body = {
            "apiVersion": "sloguard.dev/v1alpha1",
            "kind": "InferencePool",
            **pool.model_dump(mode="json", by_alias=True, exclude_none=True),
            "status": status,
        }
        body["metadata"] = {"name": "llama", "namespace": "serving"}
        assert validate_resource(body) == []
    cls_status = sloclass_status(class_body("a"), pools=[pool], classes=[], now_iso=NOW)
    body = {
        "apiVersion": "sloguard.dev/v1alpha1",
        "kind": "SLOClass",
        **class_body("a"),
        "status": cls_status,
    }
    assert validate_resource(body) == []


@pytest.mark.parametrize(
    ("namespaces", "namespace", "served"),
    [("", "any", True), ("a,b", "b", True), ("a, b", "c", False), (" ", "x", True)],
)
def test_served_namespaces(namespaces: str, namespace: str, served: bool) -> None:
    assert OperatorConfig(namespaces=namespaces).serves(namespace) is served
