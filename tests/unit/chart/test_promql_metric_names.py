"""Every PromQL expression we ship names only series that something exports, with the labels it has.

The expressions: the chart's Grafana dashboard (panels and template variables), every query the
autoscaler runs (`pool_queries`, `pod_load_query`) and the `promql` examples in docs/. The exported
names: the sidecar's families as its own registry exports them (compared with
`api/metric_names.SIDECAR_FAMILIES`) and vLLM's (`VLLM_FAMILIES`, checked against a real vLLM server
in tests/conformance/test_vllm_metric_names.py). Histograms are only queryable as `_bucket`, `_sum`,
`_count`. The chart's PodMonitor must give vLLM's series the `pool` label that every query selects on.
"""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Metric
from sloguard_testing.promql_names import Selector, selectors, template_query_selectors

from sloguard.api import metric_names as m
from sloguard.operator.core.names import POOL_LABEL
from sloguard.operator.prometheus_adapter import AdapterSettings, pod_load_query, pool_queries
from sloguard.sidecar.metrics import SidecarMetrics

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "sloguard"
DASHBOARD = CHART / "files" / "dashboard.json"
EXPORTED = m.queryable_series(m.SIDECAR_FAMILIES) | m.queryable_series(m.VLLM_FAMILIES)
_PROMQL_FENCE = re.compile(r"```promql\n(.*?)```", re.DOTALL)


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target of the dashboard."""
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            yield f"dashboard panel {panel['title']!r}", target["expr"]


def autoscaler_queries() -> Iterator[tuple[str, str]]:
    for namespace_label in (m.LABEL_NAMESPACE, None):
        settings = AdapterSettings(namespace_label=namespace_label)
        for field, query in pool_queries('po"ol', "ns", settings).items():
            yield f"autoscaler {field}", query
        yield "autoscaler pod loads", pod_load_query("pool", "ns", settings)


def doc_queries() -> Iterator[tuple[str, str]]:
    for doc in sorted((REPO / "docs").glob("*.md")):
        for block in _PROMQL_FENCE.findall(doc.read_text()):
            for line in block.splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    yield f"{doc.name}", line


ALL_QUERIES = [*dashboard_queries(), *autoscaler_queries(), *doc_queries()]


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


def test_every_dashboard_query_is_filtered_by_namespace_and_pool() -> None:
    for where, query in dashboard_queries():
        for selector in _named(where, query):
            assert selector.matchers.get(m.LABEL_POOL) == ("=~", "$pool"), f"{where}: {query}"
            assert selector.matchers.get(m.LABEL_NAMESPACE) == ("=~", "$namespace"), f"{where}: {query}"


def test_the_dashboard_has_namespace_and_pool_variables_over_exported_series() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
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


def _render_monitoring() -> list[dict[str, Any]]:
    helm_python = pytest.importorskip("helm_python")
    chart = helm_python.Chart.load(str(CHART))
    try:
        values = {
            "monitoring": {
                "serviceMonitor": {"enabled": True},
                "podMonitor": {"enabled": True},
                "dashboard": {"enabled": True},
            }
        }
        out = chart.render(values, name="sg", namespace="sloguard-system", is_install=True)
    finally:
        chart.close()
    return [d for path, text in out.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]


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


def test_the_service_monitor_scrapes_each_sidecar_once() -> None:
    docs = _render_monitoring()
    (service_monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    (endpoint,) = service_monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert {
        "sourceLabels": [sd_label(POOL_LABEL)],
        "targetLabel": "__meta_kubernetes_service_name",
        "action": "keepequal",
    } in endpoint["relabelings"]
