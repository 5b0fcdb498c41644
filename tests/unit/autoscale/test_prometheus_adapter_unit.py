"""The adapter without a server: PromQL text, label quoting, NaN, malformed answers, bucket moments."""

import math
from pathlib import Path
from typing import Any

import pytest

from sloguard.operator.core.autoscaling import PoolSnapshot, ReplicaCounts
from sloguard.operator.core.autoscaling.histograms import bucket_std
from sloguard.operator.prometheus_adapter import (
    AdapterSettings,
    PrometheusSnapshotSource,
    QueryFn,
    pool_queries,
)

NOW_S = 1_000_000.0


def test_queries_select_the_pool_and_namespace_and_quote_values() -> None:
    queries = pool_queries('we"ird', "ns", AdapterSettings(rate_window_s=30))
    assert (
        queries["queue_depth"] == 'sum by (slo_class) (sloguard_queue_depth{pool="we\\"ird",namespace="ns"})'
    )
    assert 'outcome!="cancelled"' in queries["ended"] and "[30s]" in queries["ended"]
    assert queries["ttft_p99_s"].startswith("histogram_quantile(0.99, sum by (slo_class, le) (rate(")
    no_ns = pool_queries("p", "ns", AdapterSettings(namespace_label=None))
    assert all("namespace" not in q for q in no_ns.values())


def fake(answers: dict[str, list[dict[str, Any]]]) -> QueryFn:
    """A query function answering by the first query key whose PromQL contains the given text."""

    def query(promql: str, at_s: float) -> list[dict[str, Any]]:
        assert at_s == NOW_S
        for needle, result in answers.items():
            if needle in promql:
                return result
        return []

    return query


def sample(value: str, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [NOW_S, value]}


def source(answers: dict[str, list[dict[str, Any]]]) -> PrometheusSnapshotSource:
    return PrometheusSnapshotSource("http://prometheus.invalid", query=fake(answers))


def snapshot_of(src: PrometheusSnapshotSource) -> PoolSnapshot:
    return src.snapshot(
        pool="p", namespace="ns", class_names=["a"], replicas=ReplicaCounts(2, 2), now_s=NOW_S
    )


def test_no_sidecar_series_is_metrics_missing() -> None:
    snap = snapshot_of(source({}))
    assert (snap.available, snap.unavailable_kind) == (False, "MetricsMissing")


def test_nan_quantiles_and_missing_vllm_are_none_with_a_note() -> None:
    snap = snapshot_of(
        source(
            {
                "max(timestamp(sloguard_in_flight_cap": [sample(str(NOW_S - 3))],
                "count(sloguard_in_flight_cap": [sample("2")],
                "histogram_quantile(0.99, sum by (slo_class, le) (rate(sloguard_ttft": [
                    sample("NaN", slo_class="a")
                ],
                "sloguard_queue_depth": [sample("4", slo_class="a")],
                "increase(sloguard_requests_total": [sample("0", slo_class="a")],
            }
        )
    )
    assert snap.available and snap.observed_at_s == NOW_S - 3 and snap.scraped_pods == 2
    cls = snap.class_named("a")
    assert cls is not None and cls.queue_depth == 4.0 and cls.ttft_p99_s is None
    assert cls.attainment is None  # nothing ended in the window: unknown, not 0 or 1
    assert snap.kv_usage_mean is None and snap.notes == (
        "no vLLM series for the pool (KV, preemptions, throughput unknown)",
    )


@pytest.mark.parametrize(
    "answer",
    [[{"metric": {}, "value": "garbage"}], [{"metric": {}}], [{"metric": {}, "value": [1, "x"]}]],
)
def test_malformed_answers_are_prometheus_errors(answer: list[dict[str, Any]]) -> None:
    snap = snapshot_of(source({"max(timestamp(": answer}))
    assert (snap.available, snap.unavailable_kind) == (False, "PrometheusError")


def test_query_exceptions_become_unavailable_snapshots() -> None:
    def broken(promql: str, at_s: float) -> list[dict[str, Any]]:
        raise ConnectionError("refused")

    snap = snapshot_of(PrometheusSnapshotSource("http://x", query=broken))
    assert (snap.available, snap.unavailable_kind) == (False, "PrometheusError")
    assert "ConnectionError: refused" in snap.unavailable_reason


@pytest.mark.parametrize(
    ("buckets", "std"),
    [
        ({}, None),
        ({math.inf: 5.0}, None),
        ({10.0: 0.0, math.inf: 0.0}, None),
        ({10.0: 4.0, math.inf: 4.0}, 0.0),  # all at midpoint 5
        ({10.0: 2.0, 20.0: 4.0, math.inf: 4.0}, 5.0),  # midpoints 5 and 15, half each
        ({50.0: 0.0, 100.0: 20.0, 200.0: 80.0, 400.0: 100.0, math.inf: 100.0}, math.sqrt(5400.0)),
        ({10.0: 2.0, math.inf: 4.0}, 2.5),  # +Inf bucket counted at the last finite bound: 5 and 10
    ],
)
def test_bucket_std(buckets: dict[float, float], std: float | None) -> None:
    got = bucket_std(buckets)
    assert got == (None if std is None else pytest.approx(std))


def test_docs_list_every_query_the_adapter_runs(repo_root: Path) -> None:
    docs = (repo_root / "docs" / "autoscaling.md").read_text()
    for field, promql in pool_queries("POOL", "NS", AdapterSettings()).items():
        assert f"| `{field}` | `{promql}` |" in docs, field
