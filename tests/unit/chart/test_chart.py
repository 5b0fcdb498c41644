"""The Helm chart, rendered for a matrix of values with Helm v4 as a library (helm-python-sdk).

Each render is linted, its values checked against values.schema.json, its built-in kinds validated
with kubernetes-validate --strict, and the CRDs compared with crds/ (the one source of truth).
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "sloguard"
KUBE_VERSION = "1.30.0"
FOREIGN_KINDS = {"ServiceMonitor", "PodMonitor"}  # prometheus-operator CRDs: no upstream schema

MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"watch": {"namespaces": ["serving", "batch"]}},
    "no-crds": {"crds": {"install": False}},
    "monitoring": {
        "monitoring": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
            "podMonitor": {"enabled": True},
            "dashboard": {"enabled": True},
        }
    },
    "existing-account": {"serviceAccount": {"create": False, "name": "ops"}, "rbac": {"create": False}},
    "overrides": {
        "fullnameOverride": "slo",
        "image": {"tag": "9.9.9", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "operator": {"resyncIntervalSeconds": 10, "logLevel": "DEBUG", "postEvents": False},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "podAnnotations": {"a": "b"},
        "priorityClassName": "system-cluster-critical",
    },
}


@pytest.fixture(scope="module")
def chart() -> Any:
    loaded = helm_python.Chart.load(str(CHART))
    yield loaded
    loaded.close()


def render(chart: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    out = chart.render(values, name="sg", namespace="sloguard-system", is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_values_pass_the_schema_and_lint(chart: Any, case: str) -> None:
    chart.validate_schema(MATRIX[case])
    result = helm_python.lint(str(CHART), MATRIX[case], strict=True, kube_version=KUBE_VERSION)
    assert result["errors"] == []
    assert [m for m in result["messages"] if m["severity"] > 1] == []


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_rendered_built_in_kinds_are_valid_kubernetes(chart: Any, case: str) -> None:
    docs = render(chart, MATRIX[case])
    assert docs
    for doc in docs:
        if doc["kind"] in FOREIGN_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize(
    "bad",
    [
        {"unknown": 1},
        {"image": {"pullPolicy": "Sometimes"}},
        {"operator": {"resyncIntervalSeconds": 0}},
        {"watch": {"namespaces": ["Not_A_Namespace"]}},
        {"monitoring": {"serviceMonitor": {"enabled": True, "extra": 1}}},
        {"crds": {"install": "yes"}},
    ],
)
def test_schema_refuses_bad_values(chart: Any, bad: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        chart.validate_schema(bad)


def test_values_yaml_matches_its_schema_and_every_object_forbids_extra_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, path
            for name, child in node["properties"].items():
                walk(child, f"{path}.{name}")

    walk(schema, "values")


def test_chart_crds_are_the_generated_crds_kept_on_uninstall(chart: Any) -> None:
    rendered = {d["metadata"]["name"]: d for d in by_kind(render(chart, {}), "CustomResourceDefinition")}
    sources = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "crds").glob("*.yaml"))]
    assert sorted(rendered) == sorted(s["metadata"]["name"] for s in sources)
    for source in sources:
        crd = rendered[source["metadata"]["name"]]
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        del crd["metadata"]["annotations"]
        assert crd == source
    assert by_kind(render(chart, MATRIX["no-crds"]), "CustomResourceDefinition") == []
    check = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "generate_chart_crds.py"), "--check"],
        capture_output=True,
        text=True,
        env={"PYTHONSAFEPATH": "1", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_operator_deployment_is_one_recreated_locked_down_pod(chart: Any) -> None:
    (dep,) = by_kind(render(chart, {}), "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert container["args"][1:3] == ["operator", "--all-namespaces"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["image"] == "ghcr.io/sloguard/sloguard:0.1.0"
    assert (
        dep["spec"]["selector"]["matchLabels"].items()
        <= dep["spec"]["template"]["metadata"]["labels"].items()
    )


def test_namespaced_mode_keeps_write_permissions_in_the_listed_namespaces(chart: Any) -> None:
    docs = render(chart, MATRIX["namespaced"])
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["batch", "serving"]
    assert sorted(b["metadata"]["namespace"] for b in by_kind(docs, "RoleBinding")) == ["batch", "serving"]
    (cluster_role,) = by_kind(docs, "ClusterRole")
    for rule in cluster_role["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch", "patch"}
        if "patch" in rule["verbs"]:
            assert rule["resources"] == ["sloclasses/status"]
    (dep,) = by_kind(docs, "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"][2:4] == [
        "--namespace=serving",
        "--namespace=batch",
    ]


def test_rbac_is_least_privilege_and_every_rule_is_commented(chart: Any) -> None:
    docs = render(chart, {})
    for role in by_kind(docs, "ClusterRole"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"]
            assert not (
                {"update", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])
            )
            for resource in rule["resources"]:  # the user's specs are never writable, only status
                if resource in {"inferencepools", "sloclasses"}:
                    assert "create" not in rule["verbs"] and "delete" not in rule["verbs"]
    for template in (CHART / "templates" / "rbac.yaml", CHART / "templates" / "_helpers.tpl"):
        lines = template.read_text().splitlines()
        for index, line in enumerate(lines):
            if line.strip().startswith("- apiGroups:"):
                assert lines[index - 1].strip().startswith("#"), f"{template.name}:{index + 1} has no comment"
    assert by_kind(render(chart, MATRIX["existing-account"]), "ClusterRole") == []


def test_monitoring_objects_and_the_dashboard(chart: Any) -> None:
    docs = render(chart, MATRIX["monitoring"])
    (monitor,) = by_kind(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    (pod_monitor,) = by_kind(docs, "PodMonitor")
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "engine"
    (dashboard_cm,) = by_kind(docs, "ConfigMap")
    assert dashboard_cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(dashboard_cm["data"]["sloguard.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    assert "sloguard_slo_attainment_ratio" in exprs and "sloguard_requests_total" in exprs
    assert "vllm:num_requests_waiting" in exprs and "vllm:kv_cache_usage_perc" in exprs
    assert by_kind(render(chart, {}), "ServiceMonitor") == []


def test_notes_render_for_every_case(chart: Any) -> None:
    for values in MATRIX.values():
        notes = chart.render(values, name="sg", namespace="ns")["sloguard/templates/NOTES.txt"]
        assert "kubectl apply -f examples/sloclasses.yaml" in notes


def test_the_autoscaler_is_granted_what_it_uses(chart: Any) -> None:
    for values in ({}, MATRIX["namespaced"]):
        docs = render(chart, values)
        rules = [r for kind in ("ClusterRole", "Role") for role in by_kind(docs, kind) for r in role["rules"]]

        def verbs(resource: str, rules: list[dict[str, Any]] = rules) -> set[str]:
            return {v for r in rules if resource in r["resources"] for v in r["verbs"]}

        assert {"get", "patch"} <= verbs("inferencepools/scale")  # spec.replicas via /scale
        assert {"list", "patch"} == verbs("pods")  # pod-deletion-cost; never create or delete pods
        assert "create" in verbs("events")  # ScaledUp, ScaledDown, MetricsUnavailable
