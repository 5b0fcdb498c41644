"""`spec.podTemplate`: strategic merge over the generated pod, what the operator keeps, and the GPU example.

Table-driven cases for the merge rules, a property test that no override can change an operator-owned
field, and the example GPU pool rendered into a Deployment with its tolerations, secret env and cache.
"""

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from sloguard_testing.operator_objects import UID, make_pool

from sloguard.api.conditions import ConditionStatus, ConditionType
from sloguard.api.inferencepool import InferencePool
from sloguard.operator.core.children import build_deployment, generated_pod_template, pod_template
from sloguard.operator.core.names import POOL_LABEL
from sloguard.operator.core.plan import parse_pool, plan_pool
from sloguard.operator.core.pod_template import merge_pod_template, strategic_merge
from sloguard.operator.core.status import condition_of, pool_status

REPO = Path(__file__).resolve().parents[3]


def containers_of(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in template["spec"]["containers"]}


def volumes_of(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in template["spec"]["volumes"]}


# (case, base, patch, expected): the strategic-merge rules on small documents.
MERGE_CASES: list[tuple[str, Any, Any, Any]] = [
    ("maps merge by key", {"a": "1", "b": "2"}, {"b": "3", "c": "4"}, {"a": "1", "b": "3", "c": "4"}),
    (
        "nested maps merge",
        {"r": {"requests": {"cpu": "1"}}},
        {"r": {"requests": {"memory": 8}}},
        {"r": {"requests": {"cpu": "1", "memory": 8}}},
    ),
    ("scalars replace", {"x": 1}, {"x": 2}, {"x": 2}),
    ("lists without a merge key replace", {"args": ["a", "b"]}, {"args": ["c"]}, {"args": ["c"]}),
    (
        "tolerations replace",
        {"tolerations": [{"key": "a"}]},
        {"tolerations": [{"key": "b"}]},
        {"tolerations": [{"key": "b"}]},
    ),
    (
        "containers merge by name, new names append",
        {"containers": [{"name": "engine", "image": "v:1", "env": [{"name": "A", "value": "1"}]}]},
        {
            "containers": [
                {"name": "engine", "env": [{"name": "B", "value": "2"}]},
                {"name": "x", "image": "x"},
            ]
        },
        {
            "containers": [
                {
                    "name": "engine",
                    "image": "v:1",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                },
                {"name": "x", "image": "x"},
            ]
        },
    ),
    (
        "env entries are replaced whole: valueFrom replaces value",
        {"env": [{"name": "T", "value": "plain"}]},
        {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
        {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
    ),
    (
        "volumeMounts merge by mountPath",
        {"volumeMounts": [{"name": "a", "mountPath": "/a"}]},
        {
            "volumeMounts": [
                {"name": "b", "mountPath": "/a", "readOnly": True},
                {"name": "c", "mountPath": "/c"},
            ]
        },
        {
            "volumeMounts": [
                {"name": "b", "mountPath": "/a", "readOnly": True},
                {"name": "c", "mountPath": "/c"},
            ]
        },
    ),
    (
        "volumes keep only the named fields (retainKeys), merged inside",
        {"volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]},
        {"volumes": [{"name": "dshm", "emptyDir": {"sizeLimit": "16Gi"}}]},
        {"volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}]},
    ),
    (
        "a volume changing source drops the old one",
        {"volumes": [{"name": "cache", "emptyDir": {}}]},
        {"volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "c"}}]},
        {"volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "c"}}]},
    ),
    (
        "imagePullSecrets merge by name",
        {"imagePullSecrets": [{"name": "a"}]},
        {"imagePullSecrets": [{"name": "a"}, {"name": "b"}]},
        {"imagePullSecrets": [{"name": "a"}, {"name": "b"}]},
    ),
]


@pytest.mark.parametrize(
    ("base", "patch", "expected"), [c[1:] for c in MERGE_CASES], ids=[c[0] for c in MERGE_CASES]
)
def test_strategic_merge(base: Any, patch: Any, expected: Any) -> None:
    before = copy.deepcopy((base, patch))
    assert strategic_merge(base, patch) == expected
    assert (base, patch) == before  # inputs untouched


# (case, podTemplate, check on the merged template, conflicts expected (substrings))
OVERRIDE_CASES: list[tuple[str, dict[str, Any], Any, list[str]]] = [
    (
        "pod labels and annotations are added",
        {"metadata": {"labels": {"team": "ml"}, "annotations": {"a": "b"}}},
        lambda t: (
            t["metadata"]["labels"]["team"],
            t["metadata"]["annotations"]["a"],
            t["metadata"]["labels"][POOL_LABEL],
        ),
        [],
    ),
    (
        "the selector label is the operator's",
        {"metadata": {"labels": {POOL_LABEL: "other"}}},
        lambda t: t["metadata"]["labels"][POOL_LABEL],
        ["metadata.labels[sloguard.dev/pool]"],
    ),
    (
        "sidecar ports and probes stay the operator's",
        {
            "spec": {
                "containers": [
                    {
                        "name": "sidecar",
                        "ports": [{"containerPort": 1234}],
                        "readinessProbe": {"exec": {}},
                        "env": [{"name": "X", "value": "1"}],
                    }
                ]
            }
        },
        lambda t: (
            [p["containerPort"] for p in containers_of(t)["sidecar"]["ports"]],
            containers_of(t)["sidecar"]["readinessProbe"]["httpGet"]["path"],
            containers_of(t)["sidecar"]["env"],
        ),
        ["spec.containers[sidecar].ports", "spec.containers[sidecar].readinessProbe"],
    ),
    (
        "the sidecar's config mount is the operator's",
        {
            "spec": {
                "containers": [
                    {"name": "sidecar", "volumeMounts": [{"name": "mine", "mountPath": "/etc/sloguard"}]}
                ]
            }
        },
        lambda t: {m["mountPath"]: m["name"] for m in containers_of(t)["sidecar"]["volumeMounts"]}[
            "/etc/sloguard"
        ],
        ["volumeMounts[/etc/sloguard]"],
    ),
    (
        "the config volume is the operator's",
        {
            "spec": {
                "volumes": [{"name": "sidecar-config", "emptyDir": {}}, {"name": "cache", "emptyDir": {}}]
            }
        },
        lambda t: (sorted(volumes_of(t)), "configMap" in volumes_of(t)["sidecar-config"]),
        ["spec.volumes[sidecar-config]"],
    ),
    (
        "engine args belong in spec.engine.args",
        {"spec": {"containers": [{"name": "engine", "args": ["--x"], "image": "vllm:custom"}]}},
        lambda t: (containers_of(t)["engine"]["args"][0], containers_of(t)["engine"]["image"]),
        ["spec.containers[engine].args: owned by the operator; add engine flags with spec.engine.args"],
    ),
    (
        "engine probes may be tuned",
        {"spec": {"containers": [{"name": "engine", "livenessProbe": {"timeoutSeconds": 30}}]}},
        lambda t: (
            containers_of(t)["engine"]["livenessProbe"]["timeoutSeconds"],
            containers_of(t)["engine"]["livenessProbe"]["httpGet"]["path"],
        ),
        [],
    ),
    (
        "an extra container may not take a pool port (the loopback Control port included)",
        {
            "spec": {
                "containers": [
                    {
                        "name": "proxy",
                        "image": "p",
                        "ports": [{"containerPort": 50052}, {"containerPort": 9100}],
                    }
                ]
            }
        },
        lambda t: [p["containerPort"] for p in containers_of(t)["proxy"]["ports"]],
        ["spec.containers[proxy].ports[50052]"],
    ),
    (
        "dshm can be sized",
        {"spec": {"volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}]}},
        lambda t: volumes_of(t)["dshm"],
        [],
    ),
    (
        "automount can be turned on, serviceAccountName set",
        {
            "spec": {
                "automountServiceAccountToken": True,
                "serviceAccountName": "vllm",
                "runtimeClassName": "nvidia",
            }
        },
        lambda t: (
            t["spec"]["automountServiceAccountToken"],
            t["spec"]["serviceAccountName"],
            t["spec"]["runtimeClassName"],
        ),
        [],
    ),
]
OVERRIDE_EXPECTED: dict[str, Any] = {
    "pod labels and annotations are added": ("ml", "b", "llama"),
    "the selector label is the operator's": "llama",
    "sidecar ports and probes stay the operator's": (
        [50051, 8080, 9090],
        "/readyz",
        [{"name": "X", "value": "1"}],
    ),
    "the sidecar's config mount is the operator's": "sidecar-config",
    "the config volume is the operator's": (["cache", "dshm", "sidecar-config", "sidecar-tmp"], True),
    "engine args belong in spec.engine.args": ("meta-llama/Llama-3-8B", "vllm:custom"),
    "engine probes may be tuned": (30, "/health"),
    "an extra container may not take a pool port (the loopback Control port included)": [9100],
    "dshm can be sized": {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
    "automount can be turned on, serviceAccountName set": (True, "vllm", "nvidia"),
}


@pytest.mark.parametrize(
    ("case", "override", "check", "conflicts"), OVERRIDE_CASES, ids=[c[0] for c in OVERRIDE_CASES]
)
def test_pod_template_override(case: str, override: dict[str, Any], check: Any, conflicts: list[str]) -> None:
    pool = make_pool(podTemplate=override)
    merged = pod_template(pool)
    assert check(merged.template) == OVERRIDE_EXPECTED[case]
    assert len(merged.conflicts) == len(conflicts), merged.conflicts
    for fragment in conflicts:
        assert any(fragment in line for line in merged.conflicts), (fragment, merged.conflicts)


def test_no_override_is_the_generated_template() -> None:
    pool = make_pool()
    assert pod_template(pool).template == generated_pod_template(pool)
    assert pod_template(pool).conflicts == []


_containers = st.sampled_from(["engine", "sidecar", "extra"])
_owned_keys = st.sampled_from(["ports", "livenessProbe", "readinessProbe", "startupProbe", "command", "args"])


@st.composite
def overrides(draw: st.DrawFn) -> dict[str, Any]:
    containers = []
    for name in draw(st.lists(_containers, unique=True, max_size=3)):
        container: dict[str, Any] = {"name": name, "image": "img"}
        for key in draw(st.lists(_owned_keys, unique=True, max_size=4)):
            port = draw(st.sampled_from([8000, 50051, 50052, 8080, 9090, 1234]))
            container[key] = (
                [{"containerPort": port}] if key == "ports" else ({"exec": {}} if "Probe" in key else ["x"])
            )
        containers.append(container)
    volumes = [
        {"name": n, "hostPath": {"path": "/x"}}  # a different source: a merge would show
        for n in draw(st.lists(st.sampled_from(["sidecar-config", "sidecar-tmp", "cache"]), unique=True))
    ]
    labels = draw(
        st.dictionaries(
            st.sampled_from([POOL_LABEL, "app.kubernetes.io/name", "team"]), st.sampled_from(["x", "llama"])
        )
    )
    return {"metadata": {"labels": labels}, "spec": {"containers": containers, "volumes": volumes}}


@settings(max_examples=150, deadline=None)
@given(overrides())
def test_no_override_changes_what_the_operator_owns(override: dict[str, Any]) -> None:
    pool = make_pool()
    generated = generated_pod_template(pool)
    merged = merge_pod_template(generated, override, reserved_ports=[pool.spec.sidecar.control_port]).template
    sidecar, engine = containers_of(merged)["sidecar"], containers_of(merged)["engine"]
    for key in ("ports", "livenessProbe", "readinessProbe", "command", "args", "volumeMounts"):
        assert sidecar.get(key) == containers_of(generated)["sidecar"].get(key), key
    for key in ("ports", "args", "command"):
        assert engine.get(key) == containers_of(generated)["engine"].get(key), key
    for name in ("sidecar-config", "sidecar-tmp"):
        assert volumes_of(merged)[name] == volumes_of(generated)[name]
    for key, value in generated["metadata"]["labels"].items():
        assert merged["metadata"]["labels"][key] == value
    pool_ports = {8000, 50051, 50052, 8080, 9090}
    extra_ports = [
        p["containerPort"]
        for c in merged["spec"]["containers"]
        if c["name"] == "extra"
        for p in c.get("ports", [])
    ]
    assert not pool_ports & set(extra_ports)


def test_conflicts_reach_the_status_condition() -> None:
    pool = make_pool(
        podTemplate={"spec": {"containers": [{"name": "sidecar", "ports": [{"containerPort": 1}]}]}}
    )
    conflicts = pod_template(pool).conflicts
    status = pool_status(
        pool, deployment=None, problem=None, now_iso="2026-01-01T00:00:00Z", template_conflicts=conflicts
    )
    condition = condition_of(status, ConditionType.POD_TEMPLATE_CONFLICT)
    assert condition is not None and condition.status == ConditionStatus.TRUE
    assert (
        condition.reason == "OwnedFieldsOverridden" and "spec.containers[sidecar].ports" in condition.message
    )
    clean = make_pool(podTemplate={"spec": {"nodeSelector": {"a": "b"}}})
    status = pool_status(
        clean, deployment=None, problem=None, now_iso="2026-01-01T00:00:00Z", template_conflicts=[]
    )
    condition = condition_of(status, ConditionType.POD_TEMPLATE_CONFLICT)
    assert condition is not None and condition.status == ConditionStatus.FALSE
    plain = pool_status(make_pool(), deployment=None, problem=None, now_iso="2026-01-01T00:00:00Z")
    assert condition_of(plain, ConditionType.POD_TEMPLATE_CONFLICT) is None  # no template, no noise


def test_plan_carries_the_conflicts() -> None:
    body = make_pool(podTemplate={"spec": {"volumes": [{"name": "sidecar-tmp", "emptyDir": {}}]}}).to_wire()
    body["metadata"]["uid"] = UID
    classes = {
        "interactive": {"metadata": {"name": "interactive"}, "spec": {"ttft": "500ms", "tpot": "50ms"}}
    }
    plan = plan_pool(parse_pool(body), classes)
    assert plan.problem is None and plan.template_conflicts == [
        "spec.volumes[sidecar-tmp]: owned by the operator"
    ]


def _example_pool() -> InferencePool:
    body = yaml.safe_load((REPO / "examples" / "inferencepool.yaml").read_text())
    body["metadata"]["uid"] = UID
    return InferencePool.model_validate(body)


def test_the_gpu_example_renders_tolerations_secret_env_and_cache_volume() -> None:
    deployment = build_deployment(_example_pool(), "registry.example/sloguard:0.1.0")
    kubernetes_validate.validate(deployment, "1.30.0", strict=True)
    spec = deployment["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    engine = containers_of(deployment["spec"]["template"])["engine"]
    env = {e["name"]: e for e in engine["env"]}
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}},
    }
    assert env["HF_HOME"]["value"] == "/models"
    assert volumes_of(deployment["spec"]["template"])["model-cache"] == {
        "name": "model-cache",
        "persistentVolumeClaim": {"claimName": "model-cache"},
    }
    assert {"name": "model-cache", "mountPath": "/models"} in engine["volumeMounts"]
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert engine["resources"]["requests"]["cpu"] == "8"  # the user's int, in the API server's stored form
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    sidecar = containers_of(deployment["spec"]["template"])["sidecar"]
    assert sidecar["image"] == "registry.example/sloguard:0.1.0"  # the example pins no sidecar image
    assert pod_template(_example_pool()).conflicts == []
