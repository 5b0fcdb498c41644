"""Every PromQL expression SLOGuard ships, with where it lives, for the tests that check metric names.

The chart's Grafana dashboard (panel targets; its template variables through `dashboard()`), every
query the autoscaler runs (`pool_queries` with and without the namespace label, `pod_load_query`) and
the `promql` blocks of docs/*.md. Users: tests/unit/chart/test_promql_metric_names.py (names against
api/metric_names) and tests/conformance/test_vllm_api_conformance.py (vLLM's families on a server).
"""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sloguard.api import metric_names as m
from sloguard.operator.prometheus_adapter import AdapterSettings, pod_load_query, pool_queries
from sloguard_testing.promql_names import metric_names

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "charts" / "sloguard" / "files" / "dashboard.json"
_PROMQL_FENCE = re.compile(r"```promql\n(.*?)```", re.DOTALL)


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target of the dashboard."""
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            yield f"dashboard panel {panel['title']!r}", str(target["expr"])


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
                    yield doc.name, line


def shipped_queries() -> list[tuple[str, str]]:
    return [*dashboard_queries(), *autoscaler_queries(), *doc_queries()]


def _family(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and m.VLLM_FAMILIES.get(base) is m.MetricType.HISTOGRAM:
            return base
    return name


def vllm_families_read() -> set[str]:
    """The vLLM families (histograms by their base name) that any shipped query reads."""
    names = {name for _, query in shipped_queries() for name in metric_names(query)}
    return {_family(name) for name in names if name.startswith("vllm:")}
