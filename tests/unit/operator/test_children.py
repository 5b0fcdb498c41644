"""Table-driven tests of the pure child builders: every spec field reaches the right place."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sloguard_testing.operator_objects import UID, make_class, make_pool

from sloguard.api.inferencepool import InferencePool
from sloguard.api.sidecar_config import CONFIG_FILE_NAME, SidecarConfig, sidecar_config_for_pool
from sloguard.operator.core.children import (
    build_children,
    build_config_map,
    build_deployment,
    build_headless_service,
    build_pod_disruption_budget,
    build_service,
    engine_args,
    termination_grace_s,
)
from sloguard.operator.core.names import POOL_LABEL, selector_string


def config_of(pool: InferencePool) -> SidecarConfig:
    return sidecar_config_for_pool(pool, [make_class(n) for n in pool.spec.slo_classes])


def containers(pool: InferencePool) -> dict[str, dict[str, Any]]:
    spec = build_deployment(pool)["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"]}


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


# (spec overrides, getter on the built objects, expected value)
FIELD_CASES: list[tuple[str, dict[str, Any], Callable[[InferencePool], Any], Any]] = [
    ("model is positional and first", {"model": "m/x"}, lambda p: engine_args(p)[0], "m/x"),
    ("no deprecated --model flag", {"model": "m/x"}, lambda p: "--model" in engine_args(p), False),
    (
        "served name defaults to model",
        {},
        lambda p: flag(engine_args(p), "--served-model-name"),
        "meta-llama/Llama-3-8B",
    ),
    (
        "served name",
        {"servedModelName": "llama"},
        lambda p: flag(engine_args(p), "--served-model-name"),
        "llama",
    ),
    ("engine image", {"engine": {"image": "vllm:9"}}, lambda p: containers(p)["engine"]["image"], "vllm:9"),
    ("engine port flag", {"engine": {"port": 9000}}, lambda p: flag(engine_args(p), "--port"), "9000"),
    (
        "engine port",
        {"engine": {"port": 9000}},
        lambda p: containers(p)["engine"]["ports"][0]["containerPort"],
        9000,
    ),
    (
        "gpus -> tp size",
        {"engine": {"gpus": 4}},
        lambda p: flag(engine_args(p), "--tensor-parallel-size"),
        "4",
    ),
    (
        "gpus -> limits",
        {"engine": {"gpus": 4}},
        lambda p: containers(p)["engine"]["resources"]["limits"]["nvidia.com/gpu"],
        "4",
    ),
    (
        "gpu resource name",
        {"engine": {"gpus": 1, "gpuResourceName": "amd.com/gpu"}},
        lambda p: containers(p)["engine"]["resources"]["limits"],
        {"amd.com/gpu": "1"},
    ),
    (
        "no gpus, no tp flag",
        {"engine": {"gpus": 0}},
        lambda p: flag(engine_args(p), "--tensor-parallel-size"),
        None,
    ),
    ("no gpus, no limits", {"engine": {"gpus": 0}}, lambda p: containers(p)["engine"]["resources"], {}),
    (
        "engine resources",
        {"engine": {"resources": {"requests": {"cpu": "8"}, "limits": {"memory": "48Gi"}}}},
        lambda p: containers(p)["engine"]["resources"],
        {"requests": {"cpu": "8"}, "limits": {"memory": "48Gi", "nvidia.com/gpu": "1"}},
    ),
    ("max num seqs", {"engine": {"maxNumSeqs": 64}}, lambda p: flag(engine_args(p), "--max-num-seqs"), "64"),
    ("max num seqs unset", {}, lambda p: flag(engine_args(p), "--max-num-seqs"), None),
    (
        "max model len",
        {"engine": {"maxModelLen": 4096}},
        lambda p: flag(engine_args(p), "--max-model-len"),
        "4096",
    ),
    (
        "user args last",
        {"engine": {"args": ["--enforce-eager"]}},
        lambda p: engine_args(p)[-1],
        "--enforce-eager",
    ),
    (
        "env",
        {"engine": {"env": [{"name": "HF_HOME", "value": "/models"}]}},
        lambda p: containers(p)["engine"]["env"],
        [{"name": "HF_HOME", "value": "/models"}],
    ),
    (
        "sloguard policy stamps priority",
        {"scheduling": {"policy": "sloguard"}},
        lambda p: flag(engine_args(p), "--scheduling-policy"),
        "priority",
    ),
    (
        "edf stamps priority",
        {"scheduling": {"policy": "edf"}},
        lambda p: flag(engine_args(p), "--scheduling-policy"),
        "priority",
    ),
    (
        "fcfs keeps vLLM default",
        {"scheduling": {"policy": "fcfs"}},
        lambda p: flag(engine_args(p), "--scheduling-policy"),
        None,
    ),
    ("replicas", {"replicas": 5}, lambda p: build_deployment(p)["spec"]["replicas"], 5),
    (
        "replicas default to min",
        {"minReplicas": 2, "maxReplicas": 4},
        lambda p: build_deployment(p)["spec"]["replicas"],
        2,
    ),
    ("sidecar image", {"sidecar": {"image": "sg:2"}}, lambda p: containers(p)["sidecar"]["image"], "sg:2"),
    (
        "sidecar resources",
        {"sidecar": {"resources": {"limits": {"memory": "1Gi"}}}},
        lambda p: containers(p)["sidecar"]["resources"],
        {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    ),
    (
        "sidecar requests default",
        {},
        lambda p: containers(p)["sidecar"]["resources"],
        {"requests": {"cpu": "500m", "memory": "256Mi"}},
    ),
    (
        "sidecar requests as set",
        {"sidecar": {"resources": {"requests": {"cpu": 2}}}},
        lambda p: containers(p)["sidecar"]["resources"],
        {"requests": {"cpu": "2"}},
    ),
    (
        "int quantities are written as the strings the API server stores",
        {"engine": {"resources": {"requests": {"cpu": 8}}}},
        lambda p: containers(p)["engine"]["resources"]["requests"],
        {"cpu": "8"},
    ),
    (
        "sidecar image from the operator when unpinned",
        {},
        lambda p: build_deployment(p, "registry.local/sloguard:7")["spec"]["template"]["spec"]["containers"][
            1
        ]["image"],
        "registry.local/sloguard:7",
    ),
    (
        "a pinned sidecar image wins over the operator's",
        {"sidecar": {"image": "sg:2"}},
        lambda p: build_deployment(p, "registry.local/sloguard:7")["spec"]["template"]["spec"]["containers"][
            1
        ]["image"],
        "sg:2",
    ),
    (
        "control port is not a container port",
        {"sidecar": {"controlPort": 7009}},
        lambda p: [port["containerPort"] for c in containers(p).values() for port in c["ports"]],
        [8000, 50051, 8080, 9090],
    ),
    (
        "control port reaches the sidecar config",
        {"sidecar": {"controlPort": 7009}},
        lambda p: config_of(p).control_port,
        7009,
    ),
    (
        "engine liveness timeout",
        {},
        lambda p: containers(p)["engine"]["livenessProbe"]["timeoutSeconds"],
        10,
    ),
    (
        "env valueFrom",
        {
            "engine": {
                "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]
            }
        },
        lambda p: containers(p)["engine"]["env"],
        [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}],
    ),
    (
        "gpu pools roll in place",
        {"engine": {"gpus": 2}},
        lambda p: build_deployment(p)["spec"]["strategy"]["rollingUpdate"],
        {"maxSurge": 0, "maxUnavailable": 1},
    ),
    (
        "cpu pools surge",
        {"engine": {"gpus": 0}},
        lambda p: build_deployment(p)["spec"]["strategy"]["rollingUpdate"],
        {"maxSurge": 1, "maxUnavailable": 0},
    ),
    (
        "rollout override",
        {"rollout": {"maxSurge": "25%"}},
        lambda p: build_deployment(p)["spec"]["strategy"]["rollingUpdate"],
        {"maxSurge": "25%", "maxUnavailable": 1},
    ),
    (
        "headless service",
        {"sidecar": {"grpcPort": 7000}},
        lambda p: (
            build_headless_service(p)["metadata"]["name"],
            build_headless_service(p)["spec"]["clusterIP"],
            build_headless_service(p)["spec"]["ports"][0]["port"],
        ),
        ("llama-headless", "None", 7000),
    ),
    (
        "grpc port",
        {"sidecar": {"grpcPort": 7000}},
        lambda p: containers(p)["sidecar"]["ports"][0],
        {"name": "grpc", "containerPort": 7000, "protocol": "TCP"},
    ),
    (
        "http port",
        {"sidecar": {"httpPort": 7001}},
        lambda p: build_service(p)["spec"]["ports"][1]["port"],
        7001,
    ),
    (
        "metrics port",
        {"sidecar": {"metricsPort": 7002}},
        lambda p: build_service(p)["spec"]["ports"][2]["port"],
        7002,
    ),
    (
        "metrics port annotation",
        {"sidecar": {"metricsPort": 7002}},
        lambda p: build_deployment(p)["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"],
        "7002",
    ),
    ("drain grace -> termination", {"sidecar": {"drainGracePeriod": "1m"}}, termination_grace_s, 5 + 60 + 10),
    (
        "drain grace -> engine preStop",
        {"sidecar": {"drainGracePeriod": "1m"}},
        lambda p: containers(p)["engine"]["lifecycle"]["preStop"]["sleep"]["seconds"],
        65,
    ),
]


@pytest.mark.parametrize(
    ("spec", "getter", "expected"), [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES]
)
def test_spec_field_reaches_its_place(
    spec: dict[str, Any], getter: Callable[[InferencePool], Any], expected: Any
) -> None:
    assert getter(make_pool(**spec)) == expected


def test_sidecar_configuration_is_the_contract_and_mounted_as_a_directory() -> None:
    pool = make_pool(
        sloClasses=["interactive", "batch"], scheduling={"policy": "edf", "parameters": {"x": 1}}
    )
    cm = build_config_map(pool, config_of(pool))
    loaded = SidecarConfig.model_validate(json.loads(cm["data"][CONFIG_FILE_NAME]))
    assert [c.name for c in loaded.classes] == ["interactive", "batch"]
    assert loaded.policy.parameters == {"x": 1}
    assert loaded.engine.scheduling_policy == "priority"
    assert (loaded.pool.name, loaded.pool.namespace) == ("llama", "serving")
    sidecar = containers(pool)["sidecar"]
    assert sidecar["args"] == ["sidecar", "--config", f"/etc/sloguard/{CONFIG_FILE_NAME}"]
    mount = next(m for m in sidecar["volumeMounts"] if m["name"] == "sidecar-config")
    assert mount == {"name": "sidecar-config", "mountPath": "/etc/sloguard", "readOnly": True}
    assert "subPath" not in mount  # subPath mounts never see ConfigMap updates


def test_an_sloclass_edit_changes_the_config_map_but_not_the_pod_template() -> None:
    pool = make_pool()
    before = sidecar_config_for_pool(pool, [make_class(ttft="500ms")])
    after = sidecar_config_for_pool(pool, [make_class(ttft="2s")])
    assert build_config_map(pool, before) != build_config_map(pool, after)
    templates = [
        next(c for c in build_children(pool, cfg) if c["kind"] == "Deployment")["spec"]["template"]
        for cfg in (before, after)
    ]
    assert templates[0] == templates[1]


@pytest.mark.parametrize("container", ["engine", "sidecar"])
def test_no_container_escalates_or_adds_capabilities(container: str) -> None:
    ctx = containers(make_pool())[container]["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["privileged"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}


def test_sidecar_is_non_root_with_a_read_only_root_filesystem() -> None:
    ctx = containers(make_pool())["sidecar"]["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] > 0
    assert ctx["readOnlyRootFilesystem"] is True
    pod = build_deployment(make_pool())["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["automountServiceAccountToken"] is False


def test_probes_point_at_the_documented_endpoints() -> None:
    c = containers(make_pool())
    assert c["sidecar"]["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["sidecar"]["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c["engine"][probe]["httpGet"] == {"path": "/health", "port": "engine"}


@pytest.mark.parametrize(("startup", "threshold"), [("2m", 24), ("10m", 120), ("5s", 3)])
def test_startup_probe_allows_twice_the_expected_start_time(startup: str, threshold: int) -> None:
    probe = containers(make_pool(engine={"startupTime": startup}))["engine"]["startupProbe"]
    assert probe["failureThreshold"] == threshold


@pytest.mark.parametrize("kind", ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"])
def test_every_child_has_labels_namespace_and_a_controller_owner_reference(kind: str) -> None:
    pool = make_pool()
    child = next(c for c in build_children(pool, config_of(pool)) if c["kind"] == kind)
    md = child["metadata"]
    assert md["namespace"] == "serving"
    assert md["labels"]["app.kubernetes.io/managed-by"] == "sloguard-operator"
    assert md["labels"]["app.kubernetes.io/instance"] == "llama"
    assert md["labels"][POOL_LABEL] == "llama"
    assert md["ownerReferences"] == [
        {
            "apiVersion": "sloguard.dev/v1alpha1",
            "kind": "InferencePool",
            "name": "llama",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_selectors_agree_between_deployment_service_pdb_and_status() -> None:
    pool = make_pool()
    dep = build_deployment(pool)
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector == {POOL_LABEL: "llama"}
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert build_service(pool)["spec"]["selector"] == selector
    assert build_pod_disruption_budget(pool)["spec"]["selector"]["matchLabels"] == selector
    assert selector_string("llama") == "sloguard.dev/pool=llama"


def test_a_pool_without_uid_cannot_own_children() -> None:
    pool = make_pool()
    pool.metadata.uid = None
    with pytest.raises(ValueError, match="no uid"):
        build_deployment(pool)


@pytest.mark.parametrize("kube_version", ["1.30.0", "1.33.0"])
def test_children_are_valid_kubernetes_objects(kube_version: str) -> None:
    import kubernetes_validate

    pool = make_pool(
        replicas=2,
        engine={"gpus": 2, "env": [{"name": "A", "value": "b"}], "resources": {"requests": {"cpu": "4"}}},
        sidecar={"resources": {"requests": {"cpu": "500m"}}},
    )
    for child in build_children(pool, config_of(pool)):
        kubernetes_validate.validate(child, kube_version, strict=True)


def test_the_examples_plan_into_valid_children() -> None:
    import kubernetes_validate
    import yaml

    from sloguard.operator.core.plan import parse_pool, plan_pool

    root = Path(__file__).resolve().parents[3] / "examples"
    classes = {d["metadata"]["name"]: d for d in yaml.safe_load_all((root / "sloclasses.yaml").read_text())}
    body = yaml.safe_load((root / "inferencepool.yaml").read_text())
    body["metadata"]["uid"] = UID
    plan = plan_pool(parse_pool(body), classes)
    assert plan.problem is None
    assert [c["kind"] for c in plan.children] == [
        "ConfigMap",
        "Deployment",
        "Service",
        "Service",
        "PodDisruptionBudget",
    ]
    for child in plan.children:
        kubernetes_validate.validate(child, "1.30.0", strict=True)
    args = plan.children[1]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-2:] == ["--max-model-len", "8192"]  # the example's own args come last
    assert "--scheduling-policy" in args  # policy sloguard stamps priorities


def test_no_service_exposes_the_control_port_or_the_engine() -> None:
    pool = make_pool(sidecar={"controlPort": 7009})
    for service in (build_service(pool), build_headless_service(pool)):
        ports = {p["port"] for p in service["spec"]["ports"]}
        targets = {p["targetPort"] for p in service["spec"]["ports"]}
        assert 7009 not in ports and 8000 not in ports
        assert targets <= {"grpc", "http", "metrics"}
    assert build_headless_service(pool)["spec"]["clusterIP"] == "None"
    assert build_headless_service(pool)["spec"]["selector"] == build_service(pool)["spec"]["selector"]
