"""The chart's PodMonitor relabelling, run by a real Prometheus, gives vLLM's series the labels the
autoscaler's queries select on.

prometheus-operator turns a PodMonitor endpoint into a scrape job whose relabel_configs start with its
own (namespace and pod from the Kubernetes service-discovery meta labels) followed by the endpoint's
`relabelings`. The test builds that job for a simulated vLLM engine on 127.0.0.1, with the meta labels
Kubernetes service discovery would attach to a pool's pod given as static target labels, lets Debian's
Prometheus scrape it every second, and runs every vLLM query of `pool_queries` for the pool: each must
answer. A second engine whose pod has no pool label stays out of the pool's answers.
"""

import asyncio
import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from sloguard_testing.engine_servers import start_engine_server
from sloguard_testing.prometheus_server import backfilled_prometheus

from sloguard.operator.core.names import POOL_LABEL
from sloguard.operator.prometheus_adapter import AdapterSettings, pool_queries

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(90)]

REPO = Path(__file__).resolve().parents[2]
POOL, NAMESPACE = "chat", "serving"
VLLM_FIELDS = (
    "vllm_newest_s",
    "kv_usage_mean",
    "kv_usage_max",
    "preemptions_per_s",
    "engine_waiting",
    "engine_running",
    "generation_tokens_per_s",
)


def _pod_monitor_relabelings() -> list[dict[str, Any]]:
    import helm_python

    chart = helm_python.Chart.load(str(REPO / "charts" / "sloguard"))
    try:
        out = chart.render(
            {"monitoring": {"podMonitor": {"enabled": True}}}, name="sg", namespace="monitoring"
        )
    finally:
        chart.close()
    docs = [
        d
        for path, text in out.items()
        if path.endswith(".yaml")
        for d in yaml.safe_load_all(text)
        if d and d.get("kind") == "PodMonitor"
    ]
    (endpoint,) = docs[0]["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "engine"
    return list(endpoint["relabelings"])


def _prometheus_relabel(rule: dict[str, Any]) -> dict[str, Any]:
    """A PodMonitor RelabelConfig (camelCase) as Prometheus's relabel_config (snake_case)."""
    names = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    return {names.get(key, key): (value.lower() if key == "action" else value) for key, value in rule.items()}


def _meta_labels(pod: str, pool: str | None) -> dict[str, str]:
    labels = {"__meta_kubernetes_namespace": NAMESPACE, "__meta_kubernetes_pod_name": pod}
    if pool is not None:  # service discovery: pod label sloguard.dev/pool → this meta label
        labels["__meta_kubernetes_pod_label_" + POOL_LABEL.replace(".", "_").replace("/", "_")] = pool
    return labels


def _query(url: str, promql: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": promql, "time": f"{time.time():.3f}"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def test_vllm_series_get_the_pool_label_the_autoscaler_selects_on(tmp_path: Path) -> None:
    in_pool = await start_engine_server("sim")
    outsider = await start_engine_server("sim")
    try:
        operator_relabelings = [  # what prometheus-operator puts before the endpoint's own relabelings
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ]
        job = {
            "job_name": "podMonitor/monitoring/sg-sloguard-engines/0",
            "scrape_interval": "1s",
            "static_configs": [
                {
                    "targets": [in_pool.base_url.removeprefix("http://")],
                    "labels": _meta_labels("chat-0", POOL),
                },
                {
                    "targets": [outsider.base_url.removeprefix("http://")],
                    "labels": _meta_labels("other-0", None),
                },
            ],
            "relabel_configs": operator_relabelings
            + [_prometheus_relabel(r) for r in _pod_monitor_relabelings()],
        }
        with backfilled_prometheus(tmp_path, "", scrape_configs=json.dumps([job])) as url:
            queries = pool_queries(POOL, NAMESPACE, AdapterSettings(rate_window_s=10))
            deadline = time.monotonic() + 45.0
            answered: dict[str, list[dict[str, Any]]] = {}
            while time.monotonic() < deadline:  # first scrape, then enough samples for rate()
                answered = {f: await asyncio.to_thread(_query, url, queries[f]) for f in VLLM_FIELDS}
                if all(answered.values()):
                    break
                await asyncio.sleep(0.5)  # poll interval while waiting for scrapes
            assert all(answered.values()), {f: r for f, r in answered.items() if not r}
            running = await asyncio.to_thread(_query, url, "vllm:num_requests_running")
            pools = {r["metric"].get("pod"): r["metric"].get("pool") for r in running}
            assert pools == {"chat-0": POOL, "other-0": None}
            assert {r["metric"]["namespace"] for r in running} == {NAMESPACE}
    finally:
        await in_pool.stop()
        await outsider.stop()
