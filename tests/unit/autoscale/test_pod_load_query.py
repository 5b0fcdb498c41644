"""Per-pod sidecar load for the drain choice: the PromQL, the parsing, and "unknown" on any failure."""

from typing import Any

import pytest

from sloguard.operator.autoscale import PoolAutoscaler, autoscaling_enabled
from sloguard.operator.core.config import OperatorConfig
from sloguard.operator.prometheus_adapter import AdapterSettings, PrometheusSnapshotSource, pod_load_query

NOW_S = 1_000_000.0


def test_query_sums_in_flight_and_queued_by_pod() -> None:
    assert pod_load_query("chat", "ns", AdapterSettings()) == (
        'sum by (pod) (sloguard_in_flight{pool="chat",namespace="ns"})'
        ' + sum by (pod) (sloguard_queue_depth{pool="chat",namespace="ns"})'
    )


def sample(pod: str | None, value: str) -> dict[str, Any]:
    return {"metric": {"pod": pod} if pod else {}, "value": [NOW_S, value]}


@pytest.mark.parametrize(
    ("answer", "loads"),
    [
        ([sample("a", "3"), sample("b", "0")], {"a": 3.0, "b": 0.0}),
        ([sample("a", "NaN"), sample(None, "1")], {}),  # NaN and pod-less samples say nothing
        ([], {}),
        ([{"metric": {"pod": "a"}}], None),  # malformed: unknown, not an empty pool
    ],
)
def test_loads(answer: list[dict[str, Any]], loads: dict[str, float] | None) -> None:
    source = PrometheusSnapshotSource("http://unused", query=lambda promql, at_s: answer)
    assert source.pod_loads(pool="chat", namespace="ns", now_s=NOW_S) == loads


def test_a_failing_server_gives_unknown() -> None:
    def query(promql: str, at_s: float) -> list[dict[str, Any]]:
        raise ConnectionError("refused")

    source = PrometheusSnapshotSource("http://unused", query=query)
    assert source.pod_loads(pool="chat", namespace="ns", now_s=NOW_S) is None


@pytest.mark.parametrize(
    ("spec", "enabled"),
    [({"autoscaling": {"enabled": True}}, True), ({"autoscaling": {}}, False), ({}, False), (None, False)],
)
def test_timer_filter(spec: Any, enabled: bool) -> None:
    assert autoscaling_enabled(spec) is enabled


@pytest.mark.parametrize(
    ("interval", "last", "now", "due"),
    [("5s", None, 0.0, True), ("5s", 10.0, 14.0, False), ("5s", 10.0, 15.0, True), ("bad", 0.0, 15.0, True)],
)
def test_ticks_follow_the_spec_interval(interval: str, last: float | None, now: float, due: bool) -> None:
    state = PoolAutoscaler(OperatorConfig(), last_tick_monotonic=last)
    assert state.due({"spec": {"autoscaling": {"interval": interval}}}, now) is due
