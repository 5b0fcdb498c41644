"""A real Prometheus, loaded with deterministic sidecar and vLLM series, feeds the adapter and the core.

The test writes ten minutes of OpenMetrics samples for a mixed pool of two pods (three hours in the
past), backfills them with `promtool tsdb create-blocks-from openmetrics`, starts Debian's `prometheus`
on 127.0.0.1 with an ephemeral port on that data directory, waits for `/-/ready` by polling, and
queries at chosen evaluation times. Counters grow linearly, so `rate` and `increase` are exact and every
number below is worked by hand.
"""

import math
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sloguard_testing.autoscaling import BATCH, INTERACTIVE, context

from sloguard.api.conditions import ConditionStatus, ConditionType
from sloguard.api.inferencepool import PoolRole
from sloguard.operator.core.autoscaling import ReplicaCounts, ScalingHistory, SLOGuardPolicy, decide
from sloguard.operator.prometheus_adapter import AdapterSettings, PrometheusSnapshotSource

pytestmark = pytest.mark.prometheus

STEP_S = 15
STEPS = 40  # ten minutes
T0 = (int(time.time()) // 3600 - 3) * 3600  # three hours ago, on the hour
T_END = T0 + STEP_S * STEPS
POOL, NAMESPACE = "chat", "serving"
PODS = ("chat-0", "chat-1")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _openmetrics() -> str:
    """Per pod, per 15 s step; pod 1 differs from pod 0 where noted."""
    base = {"pool": POOL, "namespace": NAMESPACE}
    families: list[tuple[str, str, list[tuple[str, dict[str, str], float]]]] = []

    def family(name: str, kind: str, series: list[tuple[str, dict[str, str], float]]) -> None:
        families.append((name, kind, series))

    # counters: (sample name, labels, increase per second)
    requests = []
    attained = []
    for i, pod in enumerate(PODS):
        pod_labels = {**base, "pod": pod}
        # interactive: pod 0 completes 9/s and rejects 1/s, pod 1 completes 10/s → 20 rps, 18 attained/s
        requests.append(
            (
                "sloguard_requests_total",
                {**pod_labels, "slo_class": "interactive", "outcome": "completed"},
                9.0 + i,
            )
        )
        if i == 0:
            requests.append(
                (
                    "sloguard_requests_total",
                    {
                        **pod_labels,
                        "slo_class": "interactive",
                        "outcome": "rejected",
                        "reason": "ttft_unattainable",
                    },
                    1.0,
                )
            )
        requests.append(
            ("sloguard_requests_total", {**pod_labels, "slo_class": "batch", "outcome": "completed"}, 1.0)
        )
        attained.append(
            ("sloguard_slo_attained_total", {**pod_labels, "slo_class": "interactive"}, 8.0 + 2 * i)
        )
        attained.append(("sloguard_slo_attained_total", {**pod_labels, "slo_class": "batch"}, 1.0))
    family("sloguard_requests", "counter", requests)
    family("sloguard_slo_attained", "counter", attained)
    family(
        "vllm:num_preemptions",
        "counter",
        [("vllm:num_preemptions_total", {**base, "pod": p}, 0.0) for p in PODS],
    )
    family(
        "vllm:generation_tokens",
        "counter",
        [("vllm:generation_tokens_total", {**base, "pod": p}, 400.0) for p in PODS],
    )
    # gauges: constant values
    gauges: dict[str, list[tuple[dict[str, str], float]]] = {
        "sloguard_queue_depth": [],
        "sloguard_in_flight": [],
        "sloguard_queue_predicted_tokens": [],
        "sloguard_queue_oldest_age_seconds": [],
        "sloguard_in_flight_cap": [],
        "vllm:kv_cache_usage_perc": [],
        "vllm:num_requests_waiting": [],
        "vllm:num_requests_running": [],
    }
    for i, pod in enumerate(PODS):
        pod_labels = {**base, "pod": pod}
        inter = {**pod_labels, "slo_class": "interactive"}
        bat = {**pod_labels, "slo_class": "batch"}
        gauges["sloguard_queue_depth"] += [(inter, 6.0), (bat, 3000.0)]
        gauges["sloguard_in_flight"] += [(inter, 10.0), (bat, 2.0)]
        gauges["sloguard_queue_predicted_tokens"] += [(inter, 600.0), (bat, 450_000.0)]
        gauges["sloguard_queue_oldest_age_seconds"] += [(inter, 0.4), (bat, 1800.0 - 300.0 * i)]
        gauges["sloguard_in_flight_cap"] += [(pod_labels, 10.0)]
        gauges["vllm:kv_cache_usage_perc"] += [(pod_labels, 0.5 + 0.2 * i)]
        gauges["vllm:num_requests_waiting"] += [(pod_labels, 1.0)]
        gauges["vllm:num_requests_running"] += [(pod_labels, 12.0)]
    for name, constant in gauges.items():
        family(name, "gauge", [(name, labels, value) for labels, value in constant])

    lines: list[str] = []
    for name, kind, series in families:
        lines.append(f"# TYPE {name} {kind}")
        for sample, labels, value in series:
            for step in range(STEPS + 1):
                v = value * STEP_S * step if kind == "counter" else value
                lines.append(f"{sample}{_labels(**labels)} {v} {T0 + STEP_S * step}")
    # histograms: cumulative bucket counts added per step, per pod
    histograms = {
        # TTFT: p50 in (0.1, 0.25] at 0.1 + 25/50·0.15 = 0.175; p99 in (1, +Inf] → 1.0
        "sloguard_ttft_seconds": (
            "interactive",
            {"0.1": 50, "0.25": 100, "0.5": 130, "1.0": 145, "+Inf": 150},
            50.0,
        ),
        # TPOT: p50 = 0.025·75/100 = 0.01875; p99 = 0.05 + 8.5/10·0.05 = 0.0925
        "sloguard_tpot_seconds": ("interactive", {"0.025": 100, "0.05": 140, "0.1": 150, "+Inf": 150}, 3.0),
        # output tokens (batch): mean 150 from _sum/_count; midpoints 75, 150, 300 → std √5400
        "sloguard_output_tokens": (
            "batch",
            {"50": 0, "100": 20, "200": 80, "400": 100, "+Inf": 100},
            15_000.0,
        ),
        # predicted at admission for the same completed batch requests: mean 20,000/100 = 200
        "sloguard_predicted_output_tokens": (
            "batch",
            {"100": 0, "200": 50, "400": 100, "+Inf": 100},
            20_000.0,
        ),
    }
    for name, (slo_class, buckets, sum_per_step) in histograms.items():
        lines.append(f"# TYPE {name} histogram")
        for pod in PODS:
            labels = {**base, "pod": pod, "slo_class": slo_class}
            for step in range(STEPS + 1):
                t = T0 + STEP_S * step
                for le, count in buckets.items():
                    lines.append(f"{name}_bucket{_labels(**labels, le=le)} {count * step} {t}")
                lines.append(f"{name}_count{_labels(**labels)} {buckets['+Inf'] * step} {t}")
                lines.append(f"{name}_sum{_labels(**labels)} {sum_per_step * step} {t}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}; see its log in the temp dir")
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)  # poll interval, not a wait for a condition
    raise TimeoutError(f"prometheus at {url} not ready after {timeout_s}s")


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if binary is None or promtool is None:
        pytest.fail("prometheus/promtool not installed: run `bash scripts/install-system-deps.sh`")
    tmp: Path = tmp_path_factory.mktemp("prometheus")
    data = tmp / "data"
    source = tmp / "series.om"
    source.write_text(_openmetrics())
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    config = tmp / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    port = _free_port()
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=30d",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _source(url: str) -> PrometheusSnapshotSource:
    return PrometheusSnapshotSource(url, AdapterSettings(rate_window_s=60, tokens_window_s=600))


def test_adapter_reads_the_series_and_the_core_scales_the_mixed_pool_out(prometheus_url: str) -> None:
    source = _source(prometheus_url)
    now_s = T_END + 5.0
    snap = source.snapshot(
        pool=POOL,
        namespace=NAMESPACE,
        class_names=["interactive", "batch"],
        replicas=ReplicaCounts(current=2, ready=2),
        now_s=now_s,
    )
    source.close()
    assert snap.available, snap.unavailable_reason
    assert snap.observed_at_s == T_END and snap.scraped_pods == 2 and snap.notes == ()
    assert snap.in_flight_cap_total == 20.0
    assert snap.kv_usage_mean == pytest.approx(0.6) and snap.kv_usage_max == pytest.approx(0.7)
    assert (snap.preemptions_per_s, snap.engine_waiting, snap.engine_running) == (0.0, 2.0, 24.0)
    assert snap.generation_tokens_per_s == pytest.approx(800.0)
    inter, batch = snap.class_named("interactive"), snap.class_named("batch")
    assert inter is not None and batch is not None
    assert inter.arrival_rate_rps == pytest.approx(20.0)
    assert inter.attainment == pytest.approx(0.9)  # 18 attained of 20 ended per second
    assert (inter.queue_depth, inter.in_flight, inter.queue_oldest_age_s) == (12.0, 20.0, 0.4)
    assert inter.ttft_p50_s == pytest.approx(0.175) and inter.ttft_p99_s == pytest.approx(1.0)
    assert inter.tpot_p50_s == pytest.approx(0.01875) and inter.tpot_p99_s == pytest.approx(0.0925)
    assert batch.arrival_rate_rps == pytest.approx(2.0) and batch.attainment == pytest.approx(1.0)
    assert (batch.queue_depth, batch.in_flight, batch.queue_predicted_tokens) == (6000.0, 4.0, 900_000.0)
    assert batch.queue_oldest_age_s == 1800.0
    assert batch.output_tokens_mean == pytest.approx(150.0)
    assert batch.output_tokens_std == pytest.approx(math.sqrt(5400.0))
    assert batch.predicted_tokens_mean == pytest.approx(200.0)

    # Mixed pool, cap 10/pod at u* = 0.8. Interactive: demand 32 → 4 replicas (attainment 0.9 vs 0.99
    # while queueing also asks ready + 2 = 4). Nothing left for batch on the 2 ready replicas:
    # 900,000 queued tokens predicted, corrected by the bias 150/200: 675,000 + ½·4·150 = 675,300 tokens
    # (+2.326·√(6002·5400) = 13,244) at 400 tokens/s per replica,
    # 3600 − 1800 − 360 − 7.5 = 1432.5 s left, new replicas productive for 1312.5 s → 1.31 replicas.
    # 4 + 1.31 → 6; +4 from 2 is allowed.
    ctx = context(PoolRole.MIXED, (INTERACTIVE, BATCH))
    decision = decide(SLOGuardPolicy(), snap, ctx, ScalingHistory(), now_s)
    assert (decision.from_replicas, decision.desired_replicas, decision.limited_by) == (2, 6, "")
    at_risk = decision.condition(ConditionType.SLO_AT_RISK)
    assert at_risk is not None and at_risk.status == ConditionStatus.TRUE
    assert {c.name for c in decision.classes if c.at_risk} == {"interactive", "batch"}
    metrics = decision.condition(ConditionType.METRICS_UNAVAILABLE)
    assert metrics is not None and metrics.status == ConditionStatus.FALSE


def test_stale_series_hold_the_pool(prometheus_url: str) -> None:
    # 150 s after the last sample Prometheus still returns the gauges (5 min look-back); the sample
    # time says they are stale, vLLM's are dropped and the decision holds.
    source = _source(prometheus_url)
    now_s = T_END + 150.0
    snap = source.snapshot(
        pool=POOL,
        namespace=NAMESPACE,
        class_names=["interactive", "batch"],
        replicas=ReplicaCounts(current=2, ready=2),
        now_s=now_s,
    )
    source.close()
    assert snap.available and snap.observed_at_s == T_END
    assert snap.kv_usage_mean is None and snap.notes == ("vLLM series 150s old: ignored",)
    decision = decide(
        SLOGuardPolicy(), snap, context(PoolRole.MIXED, (INTERACTIVE, BATCH)), ScalingHistory(), now_s
    )
    assert decision.desired_replicas == 2 and decision.held_for_metrics
    metrics = decision.condition(ConditionType.METRICS_UNAVAILABLE)
    assert metrics is not None and (metrics.status, metrics.reason) == (ConditionStatus.TRUE, "MetricsStale")


def test_unknown_pool_and_unreachable_server_are_unavailable_not_errors(prometheus_url: str) -> None:
    source = _source(prometheus_url)
    snap = source.snapshot(
        pool="other",
        namespace=NAMESPACE,
        class_names=["interactive"],
        replicas=ReplicaCounts(3, 3),
        now_s=T_END,
    )
    source.close()
    assert (snap.available, snap.unavailable_kind) == (False, "MetricsMissing")

    closed = PrometheusSnapshotSource(f"http://127.0.0.1:{_free_port()}", AdapterSettings(timeout_s=2.0))
    snap = closed.snapshot(
        pool=POOL, namespace=NAMESPACE, class_names=["interactive"], replicas=ReplicaCounts(3, 3), now_s=T_END
    )
    assert (snap.available, snap.unavailable_kind) == (False, "PrometheusError")
    assert "127.0.0.1" in snap.unavailable_reason
    decision = decide(SLOGuardPolicy(), snap, context(), ScalingHistory(), T_END)
    assert decision.desired_replicas == 3 and decision.held_for_metrics
