"""Every PromQL expression we ship names only series that something exports, with the labels it has.

The expressions: the chart's Grafana dashboard (panels and template variables), every query the
autoscaler runs (`pool_queries`, `pod_load_query`) and the `promql` examples in docs/. The exported
names: the sidecar's families as its own registry exports them (compared with
`api/metric_names.SIDECAR_FAMILIES`) and vLLM's (`VLLM_FAMILIES`, checked against a real vLLM server
in tests/conformance/test_vllm_metric_names.py). Histograms are only queryable as `_bucket`, `_sum`,
`_count`. The chart's PodMonitor must give vLLM's series the `pool` label that every query selects on.
"""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Metric
from sloguard_testing.monitoring_queries import dashboard, dashboard_queries, shipped_queries
from sloguard_testing.promql_names import Selector, selectors, template_query_selectors

from sloguard.api import metric_names as m
from sloguard.operator.core.names import POOL_LABEL
from sloguard.operator.core.plan import parse_pool, plan_pool
from sloguard.operator.prometheus_adapter import AdapterSettings, pool_queries
from sloguard.sidecar.metrics import SidecarMetrics

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "sloguard"
EXPORTED = m.queryable_series(m.SIDECAR_FAMILIES) | m.queryable_series(m.VLLM_FAMILIES)
ALL_QUERIES = shipped_queries()


def _named(where: str, query: str) -> list[Selector]:
    found = selectors(query)
    assert found, f"{where}: no series selector in {query!r}"
    return found


def test_the_sidecar_exports_exactly_the_declared_families() -> None:
    metrics = SidecarMetrics("p")
    metrics.attainment.labels("p", "c").set(1.0)  # labelled families export nothing until a child exists
    metrics.config_reloads.labels("p", "ok").inc()
    metrics.policy_info.labels("p", "a", "b").set(1)
    families: dict[str, str] = {}
    for family in metrics.registry.collect():
        assert isinstance(family, Metric)
        name = f"{family.name}_total" if family.type == "counter" else family.name
        families[name] = family.type
    assert families == {name: str(kind) for name, kind in m.SIDECAR_FAMILIES.items()}


def test_every_series_the_autoscaler_reads_is_declared() -> None:
    for name in m.SIDECAR_SERIES:
        assert name in m.SIDECAR_FAMILIES
    for name in (
        m.VLLM_NUM_REQUESTS_RUNNING,
        m.VLLM_NUM_REQUESTS_WAITING,
        m.VLLM_KV_CACHE_USAGE,
        m.VLLM_NUM_PREEMPTIONS_TOTAL,
        m.VLLM_GENERATION_TOKENS_TOTAL,
    ):
        assert name in m.VLLM_FAMILIES


@pytest.mark.parametrize(("where", "query"), ALL_QUERIES, ids=[f"{w}: {q[:60]}" for w, q in ALL_QUERIES])
def test_every_query_names_only_exported_series(where: str, query: str) -> None:
    for selector in _named(where, query):
        assert selector.metric in EXPORTED, f"{where}: {selector.metric!r} is exported by nothing: {query}"


def test_the_queries_cover_what_they_claim() -> None:
    """Guards the guard: the collectors above found the queries (a moved file would make it vacuous)."""
    wheres = {w.split(" ")[0] for w, _ in ALL_QUERIES}
    assert {"dashboard", "autoscaler", "metrics.md"} <= wheres
    names = {s.metric for w, q in ALL_QUERIES for s in selectors(q)}
    assert {m.SLO_ATTAINED_TOTAL, m.VLLM_KV_CACHE_USAGE, f"{m.TTFT_SECONDS}_bucket"} <= names


def test_the_secrets_rule_is_get_only() -> None:
    """The operator reads the Prometheus credentials a pool names, by name: never list, watch or write."""
    for values in ({}, {"watch": {"namespaces": ["serving"]}}):
        docs = _render(values)
        rules = [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]
        assert {v for r in rules if "secrets" in r["resources"] for v in r["verbs"]} == {"get"}


def test_every_dashboard_query_is_filtered_by_namespace_and_pool() -> None:
    for where, query in dashboard_queries():
        for selector in _named(where, query):
            assert selector.matchers.get(m.LABEL_POOL) == ("=~", "$pool"), f"{where}: {query}"
            assert selector.matchers.get(m.LABEL_NAMESPACE) == ("=~", "$namespace"), f"{where}: {query}"


def test_the_dashboard_has_namespace_and_pool_variables_over_exported_series() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert {"datasource", "namespace", "pool"} <= set(variables)
    for name in ("namespace", "pool"):
        variable = variables[name]
        assert variable["includeAll"] and variable["multi"], name
        for selector in template_query_selectors(variable["query"]):
            assert selector.metric in EXPORTED, f"variable {name}: {variable['query']}"
    (pool_selector,) = template_query_selectors(variables["pool"]["query"])
    assert pool_selector.matchers[m.LABEL_NAMESPACE] == ("=~", "$namespace")


def test_every_autoscaler_query_selects_the_pool_and_its_namespace() -> None:
    settings = AdapterSettings()
    for field, query in pool_queries("chat", "serving", settings).items():
        for selector in _named(field, query):
            assert selector.matchers[m.LABEL_POOL] == ("=", "chat"), field
            assert selector.matchers[m.LABEL_NAMESPACE] == ("=", "serving"), field


def _render(values: dict[str, Any]) -> list[dict[str, Any]]:
    import helm_python

    chart = helm_python.Chart.load(str(CHART))
    try:
        out = chart.render(values, name="sg", namespace="sloguard-system", is_install=True)
    finally:
        chart.close()
    return [d for path, text in out.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]


def _render_monitoring() -> list[dict[str, Any]]:
    monitors = {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}
    return _render({"monitoring": {**monitors, "dashboard": {"enabled": True}}})


def sd_label(pod_label: str) -> str:
    """The label Prometheus's Kubernetes service discovery gives a pod label (invalid characters → _)."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", pod_label)


def test_the_pod_monitor_gives_vllm_series_the_pool_label() -> None:
    docs = _render_monitoring()
    (pod_monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "engine"
    assert {
        "sourceLabels": [sd_label(POOL_LABEL)],
        "targetLabel": m.LABEL_POOL,
        "action": "replace",
    } in endpoint["relabelings"]


def test_the_service_monitor_scrapes_each_sidecar_once(repo_root: Path) -> None:
    """The ServiceMonitor follows the port named `metrics`: exactly one Service of a pool may have it."""
    (service_monitor,) = [d for d in _render_monitoring() if d["kind"] == "ServiceMonitor"]
    (endpoint,) = service_monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    docs = [
        d
        for p in sorted((repo_root / "examples").glob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text())
        if d
    ]
    classes = {d["metadata"]["name"]: d for d in docs if d["kind"] == "SLOClass"}
    pools = [d for d in docs if d["kind"] == "InferencePool"]
    assert pools
    for body in pools:
        owned = {**body, "metadata": {**body["metadata"], "uid": "0e0e0e0e-1111-2222-3333-444444444444"}}
        plan = plan_pool(parse_pool(owned), classes)
        assert plan.problem is None, plan.problem
        services = [c for c in plan.children if c["kind"] == "Service"]
        scraped = [
            s["metadata"]["name"]
            for s in services
            if any(p.get("name") == "metrics" for p in s["spec"]["ports"])
        ]
        assert scraped == [body["metadata"]["name"]]
