"""Examples are valid; invalid variants are refused by the CRD schema + CEL and by the pydantic models.

Each invalid case is one mutation of a valid base object (GIE's test/cel style) with the message a
user would see from `kubectl apply`, and the message the operator would log from pydantic.
"""

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from sloguard_testing.crd_validation import validate_resource

from sloguard.api import InferencePool, SLOClass

Mutation = Callable[[dict[str, Any]], None]
_KEY = {"name": "prometheus-ca", "key": "ca.crt"}


def load_examples(repo_root: Path, *, ours_only: bool = True) -> list[dict[str, Any]]:
    """The example documents; by default only SLOGuard's kinds (not the Namespace and PVC beside them)."""
    docs: list[dict[str, Any]] = []
    for path in sorted((repo_root / "examples").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    if ours_only:
        docs = [d for d in docs if d["apiVersion"].startswith("sloguard.dev/")]
    return docs


def model_for(obj: dict[str, Any]) -> type[SLOClass] | type[InferencePool]:
    return SLOClass if obj["kind"] == "SLOClass" else InferencePool


def test_examples_hold_three_classes_and_a_pool_using_them(repo_root: Path) -> None:
    docs = load_examples(repo_root)
    classes = {d["metadata"]["name"] for d in docs if d["kind"] == "SLOClass"}
    pools = [d for d in docs if d["kind"] == "InferencePool"]
    assert classes == {"interactive", "standard", "batch"}
    assert len(pools) == 1
    assert set(pools[0]["spec"]["sloClasses"]) == classes


def test_every_example_is_accepted_by_the_crd_and_the_model(repo_root: Path) -> None:
    for doc in load_examples(repo_root):
        assert validate_resource(doc) == [], doc["metadata"]["name"]
        model = model_for(doc).model_validate(doc)
        assert model.metadata.name == doc["metadata"]["name"]


def test_models_round_trip_the_users_spec_unchanged(repo_root: Path) -> None:
    # GitOps: what the operator reads and writes back must not rewrite the user's fields.
    for doc in load_examples(repo_root):
        wire = model_for(doc).model_validate(doc).to_wire()
        for key, value in doc["spec"].items():
            assert wire["spec"][key] == value or isinstance(value, dict), key


def _set(path: str, value: Any) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = obj
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    return mutate


SLOCLASS_BASE: dict[str, Any] = {
    "apiVersion": "sloguard.dev/v1alpha1",
    "kind": "SLOClass",
    "metadata": {"name": "c"},
    "spec": {"ttft": "500ms", "tpot": "50ms"},
}

SLOCLASS_INVALID: list[tuple[str, Mutation, str, str]] = [
    # (case, mutation, API server message fragment, pydantic message fragment)
    (
        "negative ttft",
        _set("spec.ttft", "-500ms"),
        "spec.ttft: '-500ms' does not match",
        "String should match pattern",
    ),
    ("zero ttft", _set("spec.ttft", "0s"), "ttft must be greater than 0", "ttft must be greater than 0"),
    ("zero tpot", _set("spec.tpot", "0ms"), "tpot must be greater than 0", "tpot must be greater than 0"),
    (
        "bad duration unit",
        _set("spec.tpot", "50 ms"),
        "spec.tpot: '50 ms' does not match",
        "String should match",
    ),
    (
        "days are not a unit",
        _set("spec.deadline", "1d"),
        "spec.deadline: '1d' does not match",
        "String should match",
    ),
    (
        "deadline under ttft",
        _set("spec.deadline", "100ms"),
        "deadline must be at least ttft",
        "deadline must be at least",
    ),
    (
        "unknown field",
        _set("spec.ttftMs", 500),
        "Additional properties are not allowed ('ttftMs'",
        "Extra inputs",
    ),
    (
        "attainment over 1",
        _set("spec.attainment.target", 1.5),
        "1.5 is greater than the maximum",
        "less than or equal",
    ),
    ("bad policy on miss", _set("spec.onUnattainable", "Drop"), "'Drop' is not one of", "Input should be"),
    ("missing tpot", lambda o: o["spec"].pop("tpot"), "'tpot' is a required property", "Field required"),
]


@pytest.mark.parametrize(
    ("mutation", "server_message", "model_message"),
    [case[1:] for case in SLOCLASS_INVALID],
    ids=[case[0] for case in SLOCLASS_INVALID],
)
def test_invalid_sloclass_is_refused_with_a_clear_message(
    mutation: Mutation, server_message: str, model_message: str
) -> None:
    obj = copy.deepcopy(SLOCLASS_BASE)
    mutation(obj)
    errors = validate_resource(obj)
    assert any(server_message in e for e in errors), errors
    with pytest.raises(ValidationError, match=model_message):
        SLOClass.model_validate(obj)


def pool_base(repo_root: Path) -> dict[str, Any]:
    return next(d for d in load_examples(repo_root) if d["kind"] == "InferencePool")


POOL_INVALID: list[tuple[str, Mutation, str, str]] = [
    (
        "min over max",
        _set("spec.minReplicas", 9),
        "minReplicas must be <= maxReplicas",
        "minReplicas must be <=",
    ),
    (
        "negative max",
        _set("spec.maxReplicas", -1),
        "-1 is less than the minimum of 1",
        "greater than or equal to 1",
    ),
    ("no classes", _set("spec.sloClasses", []), "spec.sloClasses: [] should be non-empty", "at least 1 item"),
    ("bad class name", _set("spec.sloClasses", ["Not_A_Name"]), "does not match", ""),
    (
        "unknown policy",
        _set("spec.scheduling.policy", "lottery"),
        "'lottery' is not one of",
        "Input should be",
    ),
    (
        "unknown field",
        _set("spec.engine.gpuCount", 2),
        "Additional properties are not allowed ('gpuCount'",
        "Extra",
    ),
    (
        "bad interval",
        _set("spec.autoscaling.interval", "soon"),
        "'soon' does not match",
        "String should match",
    ),
    (
        "autoscaling without prometheus",
        lambda o: o["spec"]["autoscaling"].pop("prometheusUrl"),
        "prometheus.url (or prometheusUrl) is required when autoscaling is enabled",
        "is required when autoscaling is enabled",
    ),
    (
        "both prometheus url spellings",
        _set("spec.autoscaling.prometheus", {"url": "https://thanos:9091"}),
        "set prometheus.url or prometheusUrl, not both",
        "not both",
    ),
    (
        "two CA bundles",
        _set("spec.autoscaling.prometheus", {"caSecretRef": _KEY, "caConfigMapRef": _KEY}),
        "set at most one of caSecretRef and caConfigMapRef",
        "at most one of caSecretRef",
    ),
    (
        "token and basic auth",
        _set(
            "spec.autoscaling.prometheus", {"bearerTokenSecretRef": _KEY, "basicAuthSecretRef": {"name": "b"}}
        ),
        "set at most one of bearerTokenSecretRef and basicAuthSecretRef",
        "at most one of bearerTokenSecretRef",
    ),
    (
        "CA bundle with verification off",
        _set("spec.autoscaling.prometheus", {"insecureSkipVerify": True, "caConfigMapRef": _KEY}),
        "a CA bundle is pointless with insecureSkipVerify",
        "pointless",
    ),
    (
        "bad secret key",
        _set("spec.autoscaling.prometheus", {"bearerTokenSecretRef": {"name": "s", "key": "a/b"}}),
        "'a/b' does not match",
        "String should match",
    ),
    (
        "in-flight bounds inverted",
        _set("spec.sidecar.limits.minInFlight", 512),
        "minInFlight must be <= maxInFlight",
        "minInFlight must be <= maxInFlight",
    ),
    ("bad role", _set("spec.role", "Turbo"), "'Turbo' is not one of", "Input should be"),
    (
        "port out of range",
        _set("spec.engine.port", 70000),
        "70000 is greater than the maximum",
        "less than or equal",
    ),
    (
        "sidecar grpc port equals the engine port",
        _set("spec.sidecar.grpcPort", 8000),
        "must all differ",
        "must all differ",
    ),
    (
        "control port equals the metrics port (both defaulted but one)",
        _set("spec.sidecar.controlPort", 9090),
        "must all differ",
        "must all differ",
    ),
    (
        "interval 0s",
        _set("spec.autoscaling.interval", "0s"),
        "must be greater than zero",
        "greater than zero",
    ),
    (
        "interval 0m0s",
        _set("spec.autoscaling.interval", "0m0s"),
        "must be greater than zero",
        "greater than zero",
    ),
    (
        "bad quantity",
        _set("spec.engine.resources.requests", {"cpu": "8 cores"}),
        "does not match",
        "quantity",
    ),
    ("quantity as float", _set("spec.engine.resources.requests", {"cpu": 1.5}), "is not valid under any", ""),
    (
        "env value and valueFrom",
        _set(
            "spec.engine.env",
            [{"name": "T", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        ),
        "value and valueFrom are exclusive",
        "value and valueFrom are exclusive",
    ),
    (
        "env repeated name",
        _set("spec.engine.env", [{"name": "T", "value": "x"}, {"name": "T", "value": "y"}]),
        "Duplicate value",
        "",
    ),
    (
        "env valueFrom with two sources",
        _set(
            "spec.engine.env",
            [
                {
                    "name": "T",
                    "valueFrom": {
                        "secretKeyRef": {"name": "s", "key": "k"},
                        "configMapKeyRef": {"name": "c", "key": "k"},
                    },
                }
            ],
        ),
        "exactly one of secretKeyRef",
        "exactly one of secretKeyRef",
    ),
    (
        "volume with two sources",
        _set(
            "spec.podTemplate.spec.volumes",
            [{"name": "v", "emptyDir": {}, "persistentVolumeClaim": {"claimName": "c"}}],
        ),
        "exactly one of persistentVolumeClaim",
        "exactly one of persistentVolumeClaim",
    ),
    (
        "volume without a source",
        _set("spec.podTemplate.spec.volumes", [{"name": "v"}]),
        "exactly one of persistentVolumeClaim",
        "exactly one of persistentVolumeClaim",
    ),
    (
        "extra container without an image",
        _set("spec.podTemplate.spec.containers", [{"name": "proxy"}]),
        "needs an image",
        "needs an image",
    ),
    (
        "bad toleration operator",
        _set("spec.podTemplate.spec.tolerations", [{"key": "k", "operator": "Maybe"}]),
        "'Maybe' is not one of",
        "Input should be",
    ),
    (
        "container name not a DNS label",
        _set("spec.podTemplate.spec.containers", [{"name": "Engine"}]),
        "does not match",
        "String should match",
    ),
    (
        "unknown pod spec field",
        _set("spec.podTemplate.spec.hostNetwork", True),
        "Additional properties are not allowed ('hostNetwork'",
        "Extra",
    ),
    (
        "envFrom with no source",
        _set("spec.podTemplate.spec.containers", [{"name": "engine", "envFrom": [{"prefix": "A_"}]}]),
        "exactly one of secretRef, configMapRef",
        "exactly one of secretRef, configMapRef",
    ),
    ("rollout bound not a percentage", _set("spec.rollout.maxSurge", "lots"), "does not match", "percentage"),
]


@pytest.mark.parametrize(
    ("mutation", "server_message", "model_message"),
    [case[1:] for case in POOL_INVALID],
    ids=[case[0] for case in POOL_INVALID],
)
def test_invalid_pool_is_refused_with_a_clear_message(
    repo_root: Path, mutation: Mutation, server_message: str, model_message: str
) -> None:
    obj = copy.deepcopy(pool_base(repo_root))
    mutation(obj)
    errors = validate_resource(obj)
    assert any(server_message in e for e in errors), errors
    if model_message:
        with pytest.raises(ValidationError, match=model_message):
            InferencePool.model_validate(obj)


VALID_POOL_VARIANTS: list[tuple[str, Mutation]] = [
    ("int quantities", _set("spec.engine.resources", {"requests": {"cpu": 8, "memory": "32Gi"}})),
    (
        "string quantities",
        _set("spec.sidecar.resources", {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}),
    ),
    ("exponent quantity", _set("spec.engine.resources.limits", {"memory": "1e9"})),
    ("ports all different", _set("spec.sidecar", {"grpcPort": 7000, "httpPort": 7001, "metricsPort": 7002})),
    ("interval 500ms", _set("spec.autoscaling.interval", "500ms")),
    ("rollout counts and percentages", _set("spec.rollout", {"maxSurge": "25%", "maxUnavailable": 0})),
    (
        "a full pod template",
        _set(
            "spec.podTemplate",
            {
                "metadata": {"labels": {"team": "ml"}, "annotations": {"a": "b"}},
                "spec": {
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}},
                    "imagePullSecrets": [{"name": "regcred"}],
                    "serviceAccountName": "vllm",
                    "runtimeClassName": "nvidia",
                    "priorityClassName": "inference",
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone"}],
                    "initContainers": [{"name": "fetch", "image": "busybox", "command": ["true"]}],
                    "volumes": [
                        {"name": "cfg", "configMap": {"name": "c"}},
                        {"name": "s", "secret": {"secretName": "s"}},
                        {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                    ],
                    "containers": [
                        {
                            "name": "sidecar",
                            "env": [
                                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                            ],
                            "resources": {"requests": {"cpu": 1}},
                        },
                        {
                            "name": "engine",
                            "envFrom": [{"secretRef": {"name": "s"}}],
                            "securityContext": {"runAsUser": 1000},
                        },
                    ],
                },
            },
        ),
    ),
]


@pytest.mark.parametrize(
    "mutation", [c[1] for c in VALID_POOL_VARIANTS], ids=[c[0] for c in VALID_POOL_VARIANTS]
)
def test_valid_pool_variants_are_accepted(repo_root: Path, mutation: Mutation) -> None:
    obj = copy.deepcopy(pool_base(repo_root))
    mutation(obj)
    assert validate_resource(obj) == []
    InferencePool.model_validate(obj)


def test_int_quantities_round_trip_as_ints(repo_root: Path) -> None:
    obj = copy.deepcopy(pool_base(repo_root))
    obj["spec"]["engine"]["resources"] = {"requests": {"cpu": 8, "memory": "32Gi"}}
    wire = InferencePool.model_validate(obj).to_wire()
    assert wire["spec"]["engine"]["resources"]["requests"] == {"cpu": 8, "memory": "32Gi"}


def test_the_sidecar_image_is_not_a_crd_default() -> None:
    # A stored default would pin every pool to the image of the day it was created.
    from sloguard.api.crd import inferencepool_crd

    schema = inferencepool_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert "default" not in schema["properties"]["spec"]["properties"]["sidecar"]["properties"]["image"]


def test_prometheus_connection_with_tls_and_auth_is_accepted(repo_root: Path) -> None:
    obj = copy.deepcopy(pool_base(repo_root))
    autoscaling = obj["spec"]["autoscaling"]
    autoscaling.pop("prometheusUrl")
    autoscaling["prometheus"] = {
        "url": "https://thanos-querier.openshift-monitoring.svc:9091",
        "caConfigMapRef": {"name": "openshift-service-ca.crt", "key": "service-ca.crt"},
        "bearerTokenSecretRef": {"name": "sloguard-prometheus", "key": "token"},
    }
    assert validate_resource(obj) == []
    spec = InferencePool.model_validate(obj).spec.autoscaling
    assert spec.prometheus_base_url == "https://thanos-querier.openshift-monitoring.svc:9091"
    assert spec.prometheus is not None and not spec.prometheus.insecure_skip_verify
    autoscaling["prometheus"] = {"url": "http://p:9090", "basicAuthSecretRef": {"name": "creds"}}
    assert validate_resource(obj) == []
    basic = InferencePool.model_validate(obj).spec.autoscaling.prometheus
    assert basic is not None and basic.basic_auth_secret_ref is not None
    assert (basic.basic_auth_secret_ref.username_key, basic.basic_auth_secret_ref.password_key) == (
        "username",
        "password",
    )


def test_policy_parameters_are_free_form_for_the_policy_to_validate(repo_root: Path) -> None:
    obj = copy.deepcopy(pool_base(repo_root))
    obj["spec"]["scheduling"]["parameters"] = {"eta": 1.3, "nested": {"anything": [1, "two"]}}
    assert validate_resource(obj) == []
