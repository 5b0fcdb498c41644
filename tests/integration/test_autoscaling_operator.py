"""The real operator autoscales a pool from a real Prometheus: up under backpressure, then down, draining.

A timeline of sidecar and vLLM series for four pods is backfilled with promtool around the test's start
(samples every second, some in the future: an instant query at time T sees only samples up to T). Until
`switch` the pool is backed up (20 queued and 10 in flight per pod, attainment 0.8, TTFT p99 over the
target, KV cache full and preempting); from `switch` on it is nearly idle, with different in-flight work
per pod. The operator (kopf.testing.KopfRunner) runs against kmock with a 1 s interval and short
cooldowns, reads that Prometheus in real time and must

1. scale 2 → 4 (maxReplicas) through /scale, with status, conditions, an Event and lowered per-pod cap
   bounds in the sidecar ConfigMap (no pod template change);
2. scale 4 → 2 once the series are idle, after marking the two least-loaded pods with a negative
   pod-deletion-cost, and restore the cap bounds.

A second test points the pool at a port where nothing listens: the replicas hold, MetricsUnavailable
turns True with one Warning Event, and SLOAtRisk is Unknown. Every wait polls for a condition with a
deadline.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import kmock
import kopf.testing
import pytest
from sloguard_testing.kube_emulator import (
    CONFIGMAPS,
    DEPLOYMENTS,
    POOLS,
    ServerSideEmulator,
    declare_sloguard_resources,
    live,
)
from sloguard_testing.prometheus_server import backfilled_prometheus, free_port, labels_text

from sloguard.api import metric_names as m

pytestmark = [pytest.mark.prometheus, pytest.mark.kmock(cls=ServerSideEmulator), pytest.mark.timeout(150)]

NS, POOL = "default", "chat"
PODS = ("chat-0", "chat-1", "chat-2", "chat-3")
IDLE_LOAD = {"chat-0": 3.0, "chat-1": 0.0, "chat-2": 5.0, "chat-3": 1.0}  # in flight once idle
# The series are backed up for this long after they are generated: long enough for Prometheus (backfill
# included) and the operator to start and act on a loaded 2-core machine (12 s was missed by 1 s there).
BUSY_S = 30
PODS_URL = f"/api/v1/namespaces/{NS}/pods"
MERGE = {"Content-Type": "application/merge-patch+json"}
COST = "controller.kubernetes.io/pod-deletion-cost"
EVENTS = kmock.resource("v1/events")
Series = list[tuple[str, dict[str, str], Callable[[int], float]]]  # (sample name, labels, value at t)
PODS_RES = kmock.resource("v1/pods")


def timeline(start_s: int, switch_s: int, end_s: int) -> str:
    """OpenMetrics text: per pod, one sample per second from `start_s` to `end_s`."""
    lines: list[str] = []
    steps = range(start_s, end_s + 1)

    def busy(t: int) -> bool:
        return t < switch_s

    def family(name: str, kind: str, series: Series) -> None:
        lines.append(f"# TYPE {name} {kind}")
        for sample, labels, value in series:
            lines.extend(f"{sample}{labels_text(labels)} {value(t)} {t}" for t in steps)

    def counter(rate_busy: float, rate_idle: float) -> Callable[[int], float]:
        def value(t: int) -> float:
            busy_s = min(t, switch_s) - start_s
            return rate_busy * busy_s + rate_idle * max(0, t - switch_s)

        return value

    def gauge(v_busy: float, v_idle: float) -> Callable[[int], float]:
        return lambda t: v_busy if busy(t) else v_idle

    def per_pod(extra: dict[str, str]) -> list[dict[str, str]]:
        return [{"pool": POOL, "namespace": NS, "pod": p, **extra} for p in PODS]

    cls = {"slo_class": "interactive"}
    family(
        "sloguard_requests",
        "counter",
        [(m.REQUESTS_TOTAL, {**lb, "outcome": "completed"}, counter(5.0, 5.0)) for lb in per_pod(cls)],
    )
    family(
        "sloguard_slo_attained",
        "counter",
        [(m.SLO_ATTAINED_TOTAL, lb, counter(4.0, 5.0)) for lb in per_pod(cls)],  # 0.8, then 1.0
    )
    family(m.QUEUE_DEPTH, "gauge", [(m.QUEUE_DEPTH, lb, gauge(20.0, 0.0)) for lb in per_pod(cls)])
    family(
        m.IN_FLIGHT,
        "gauge",
        [(m.IN_FLIGHT, lb, gauge(10.0, IDLE_LOAD[lb["pod"]])) for lb in per_pod(cls)],
    )
    family(m.IN_FLIGHT_CAP, "gauge", [(m.IN_FLIGHT_CAP, lb, gauge(10.0, 10.0)) for lb in per_pod({})])
    kv = m.VLLM_KV_CACHE_USAGE
    family(kv, "gauge", [(kv, lb, gauge(0.95, 0.3)) for lb in per_pod({})])
    family(
        m.VLLM_NUM_REQUESTS_RUNNING,
        "gauge",
        [(m.VLLM_NUM_REQUESTS_RUNNING, lb, gauge(10.0, IDLE_LOAD[lb["pod"]])) for lb in per_pod({})],
    )
    family(
        "vllm:num_preemptions",
        "counter",
        [(m.VLLM_NUM_PREEMPTIONS_TOTAL, lb, counter(0.5, 0.0)) for lb in per_pod({})],
    )
    # TTFT per second and pod: busy p99 beyond 1 s (over the 500 ms target), idle p99 under 0.5 s.
    buckets_busy = {"0.1": 2, "0.5": 6, "1.0": 8, "+Inf": 10}
    buckets_idle = {"0.1": 8, "0.5": 10, "1.0": 10, "+Inf": 10}
    lines.append(f"# TYPE {m.TTFT_SECONDS} histogram")
    for lb in per_pod(cls):
        for t in steps:
            busy_s, idle_s = min(t, switch_s) - start_s, max(0, t - switch_s)
            for le, per_busy_s in buckets_busy.items():
                count = per_busy_s * busy_s + buckets_idle[le] * idle_s
                lines.append(f"{m.TTFT_SECONDS}_bucket{labels_text({**lb, 'le': le})} {count} {t}")
            total = 10 * (busy_s + idle_s)
            lines.append(f"{m.TTFT_SECONDS}_count{labels_text(lb)} {total} {t}")
            lines.append(f"{m.TTFT_SECONDS}_sum{labels_text(lb)} {0.5 * busy_s * 10 + 0.1 * idle_s * 10} {t}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, float]]:
    """(URL, the wall time at which the series turn idle)."""
    now = int(time.time())
    switch = now + BUSY_S
    with backfilled_prometheus(tmp_path, timeline(now - 120, switch, now + 150)) as url:
        yield url, float(switch)


async def until(predicate: Callable[[], Any], what: str, timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def pool_condition(k: Any, type_: str) -> dict[str, Any]:
    return condition(live(k, POOLS, NS, POOL), type_)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions", []) or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def events(k: Any) -> list[dict[str, Any]]:
    return [
        json.loads(json.dumps(obj, default=dict))
        for (res, _, _), obj in k.objects.items()
        if res == EVENTS and not obj.deleted
    ]


def limits(k: Any) -> dict[str, Any]:
    cm = live(k, CONFIGMAPS, NS, f"{POOL}-sidecar") or {"data": {"sidecar.json": '{"limits": {}}'}}
    return dict(json.loads(cm["data"]["sidecar.json"])["limits"])


def deployment_replicas(k: Any) -> int | None:
    replicas = (live(k, DEPLOYMENTS, NS, POOL) or {}).get("spec", {}).get("replicas")
    return None if replicas is None else int(replicas)


def pool_body(prometheus_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "sloguard.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": POOL, "namespace": NS},
        "spec": {
            "model": "tiny-llama",
            "engine": {"image": "vllm/vllm-openai:v0.11.0", "gpus": 1, "startupTime": "5s"},
            "sloClasses": ["interactive"],
            "replicas": 2,
            "minReplicas": 1,
            "maxReplicas": 4,
            "autoscaling": {
                "enabled": True,
                "prometheusUrl": prometheus_url,
                "interval": "1s",
                "scaleUpCooldown": "1s",
                "scaleDownCooldown": "3s",
                "maxScaleDownStep": 2,
            },
        },
    }


def pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"sloguard.dev/pool": POOL}},
        "spec": {"containers": [{"name": "engine", "image": "vllm/vllm-openai:v0.11.0"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


async def play_deployment_controller(k: Any, replicas: int) -> None:
    """kmock has no controllers: report the Deployment's pods ready, as the kubelet would."""
    generation = live(k, DEPLOYMENTS, NS, POOL)["metadata"]["generation"]  # type: ignore[index]
    status = {"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas}
    await k.patch(
        f"/apis/apps/v1/namespaces/{NS}/deployments/{POOL}/status",
        json={"status": {**status, "readyReplicas": replicas}},
        headers=MERGE,
    )


@pytest.fixture
async def operator(kmock: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    declare_sloguard_resources(kmock)
    for key, value in {
        "SLOGUARD_APISERVER_URL": str(kmock.url).rstrip("/"),
        "SLOGUARD_RESYNC_INTERVAL_S": "1",
        "SLOGUARD_RETRY_DELAY_S": "0.2",
        "SLOGUARD_POST_EVENTS": "false",
        "SLOGUARD_AUTOSCALE_RATE_WINDOW_S": "4",  # the series have a sample every second
    }.items():
        monkeypatch.setenv(key, value)
    args = ["run", "--standalone", "-A", "-m", "sloguard.operator.handlers"]
    runner = kopf.testing.KopfRunner(args, timeout=20)
    runner.__enter__()
    try:
        yield kmock
    finally:
        await asyncio.to_thread(runner.__exit__, None, None, None)  # see test_operator_kmock.py
    assert runner.exit_code == 0, runner.output


async def test_scales_up_under_backpressure_then_down_draining_the_least_loaded_pods(
    prometheus: tuple[str, float], operator: Any
) -> None:
    k = operator
    url, switch = prometheus
    await k.post(
        "/apis/sloguard.dev/v1alpha1/sloclasses",
        json={
            "apiVersion": "sloguard.dev/v1alpha1",
            "kind": "SLOClass",
            "metadata": {"name": "interactive"},
            "spec": {"ttft": "500ms", "tpot": "50ms"},
        },
    )
    for name in PODS[:2]:
        await k.post(PODS_URL, json=pod(name))
    await k.post(f"/apis/sloguard.dev/v1alpha1/namespaces/{NS}/inferencepools", json=pool_body(url))
    await until(lambda: live(k, DEPLOYMENTS, NS, POOL), "the Deployment")
    template = live(k, DEPLOYMENTS, NS, POOL)["spec"]["template"]  # type: ignore[index]
    await play_deployment_controller(k, 2)

    # 1. Up: demand 120 over cap 10/pod at 0.83 wants 15 replicas; maxReplicas is 4.
    def scaled_to(n: int) -> bool:
        pool = live(k, POOLS, NS, POOL) or {}
        last = (pool.get("status") or {}).get("lastScaling") or {}
        return bool(pool["spec"].get("replicas") == n and last.get("toReplicas") == n)

    await until(lambda: scaled_to(4), "a scale-up to 4 through /scale")
    assert time.time() < switch, "scaled up only after the series turned idle: machine too slow?"
    await until(lambda: deployment_replicas(k) == 4, "the Deployment at 4")
    await until(lambda: pool_condition(k, "ScalingLimited").get("status") == "True", "limited")
    up = live(k, POOLS, NS, POOL)["status"]  # type: ignore[index]
    assert (up["lastScaling"]["fromReplicas"], up["lastScaling"]["toReplicas"]) == (2, 4)
    assert up["desiredReplicas"] == 4
    at_risk = pool_condition(k, "SLOAtRisk")
    assert (at_risk["status"], at_risk["reason"]) == ("True", "AttainmentBelowTarget")
    assert pool_condition(k, "ScalingLimited")["reason"] == "AtMaxReplicas"
    assert pool_condition(k, "MetricsUnavailable")["status"] == "False"
    assert pool_condition(k, "Ready")  # the reconciler's conditions are kept
    (observed,) = up["classes"]
    assert observed["name"] == "interactive" and observed["attainment"] == pytest.approx(0.8)
    assert observed["target"] == 0.99 and observed["ttftP99Ms"] == pytest.approx(1000.0)
    scaled_up = await until(lambda: [e for e in events(k) if e["reason"] == "ScaledUp"], "a ScaledUp Event")
    assert len(scaled_up) == 1 and scaled_up[0]["message"].startswith("2 → 4 replicas")
    assert scaled_up[0]["involvedObject"]["name"] == POOL
    # KV full and preempting: the sidecars' in-flight cap is bounded to in-flight per ready replica,
    # through the ConfigMap (hot reload), never the pod template.
    await until(lambda: limits(k).get("max_in_flight", 256) < 256, "lowered cap bounds in the ConfigMap")
    assert limits(k)["max_in_flight"] in {10, 20}  # 40 in flight over 4 or 2 ready replicas
    assert live(k, DEPLOYMENTS, NS, POOL)["spec"]["template"] == template  # type: ignore[index]

    # The new pods come up.
    for name in PODS[2:]:
        await k.post(PODS_URL, json=pod(name))
    await play_deployment_controller(k, 4)

    # 2. Down, once idle: 9 in flight needs 2 replicas; the two least-loaded pods are marked first.
    await until(lambda: scaled_to(2), "a scale-down to 2", timeout_s=BUSY_S + 20.0)
    assert time.time() >= switch
    down = live(k, POOLS, NS, POOL)["status"]  # type: ignore[index]
    assert (down["lastScaling"]["fromReplicas"], down["lastScaling"]["toReplicas"]) == (4, 2)
    costs = {p: (live(k, PODS_RES, NS, p) or {})["metadata"].get("annotations", {}).get(COST) for p in PODS}
    assert costs == {"chat-0": None, "chat-1": "-2", "chat-2": None, "chat-3": "-1"}
    await until(lambda: deployment_replicas(k) == 2, "the Deployment at 2")
    scaled_down = await until(
        lambda: [e for e in events(k) if e["reason"] == "ScaledDown"], "a ScaledDown Event"
    )
    assert [e["message"][:14] for e in scaled_down] == ["4 → 2 replicas"]
    await until(lambda: pool_condition(k, "SLOAtRisk").get("status") == "False", "SLOs met")
    assert pool_condition(k, "ScalingLimited")["status"] == "False"
    await until(lambda: limits(k).get("max_in_flight") == 256, "cap bounds back to the spec's")
    assert live(k, DEPLOYMENTS, NS, POOL)["spec"]["template"] == template  # type: ignore[index]


async def test_no_metrics_holds_the_replicas_and_says_so(
    operator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    k = operator

    def failed_queries() -> int:  # one per tick: the adapter logs each failed snapshot
        return sum(r.name == "sloguard.operator.prometheus_adapter" for r in caplog.records)

    await k.post(
        "/apis/sloguard.dev/v1alpha1/sloclasses",
        json={
            "apiVersion": "sloguard.dev/v1alpha1",
            "kind": "SLOClass",
            "metadata": {"name": "interactive"},
            "spec": {"ttft": "500ms", "tpot": "50ms"},
        },
    )
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    await k.post(f"/apis/sloguard.dev/v1alpha1/namespaces/{NS}/inferencepools", json=pool_body(nobody))
    metrics = await until(lambda: pool_condition(k, "MetricsUnavailable"), "MetricsUnavailable")
    assert (metrics["status"], metrics["reason"]) == ("True", "PrometheusError")
    assert "127.0.0.1" in metrics["message"]
    assert pool_condition(k, "SLOAtRisk")["status"] == "Unknown"
    warnings = await until(
        lambda: [e for e in events(k) if e["reason"] == "MetricsUnavailable"], "a MetricsUnavailable Event"
    )
    assert warnings[0]["type"] == "Warning"
    # Ticks go on (one a second) and keep holding: never a scale on nothing, never a repeated Event.
    seen = failed_queries()
    await until(lambda: failed_queries() >= seen + 3, "three more ticks")
    pool = live(k, POOLS, NS, POOL) or {}
    assert pool["spec"]["replicas"] == 2 and "lastScaling" not in pool["status"]
    assert deployment_replicas(k) == 2
    assert len([e for e in events(k) if e["reason"] == "MetricsUnavailable"]) == 1


async def test_missing_prometheus_credentials_hold_and_name_the_secret(operator: Any) -> None:
    """spec.autoscaling.prometheus names a Secret that is not there yet: MetricsUnavailable says which;
    once the Secret exists the operator reads it (get) and goes on to query Prometheus."""
    k = operator
    await k.post(
        "/apis/sloguard.dev/v1alpha1/sloclasses",
        json={
            "apiVersion": "sloguard.dev/v1alpha1",
            "kind": "SLOClass",
            "metadata": {"name": "interactive"},
            "spec": {"ttft": "500ms", "tpot": "50ms"},
        },
    )
    body = pool_body("http://unused")
    autoscaling = body["spec"]["autoscaling"]
    autoscaling.pop("prometheusUrl")
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    autoscaling["prometheus"] = {
        "url": nobody,
        "bearerTokenSecretRef": {"name": "prom-token", "key": "token"},
    }
    await k.post(f"/apis/sloguard.dev/v1alpha1/namespaces/{NS}/inferencepools", json=body)
    metrics = await until(lambda: pool_condition(k, "MetricsUnavailable"), "MetricsUnavailable")
    assert (metrics["status"], metrics["reason"]) == ("True", "PrometheusCredentials")
    assert "Secret prom-token not found" in metrics["message"]
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "prom-token", "namespace": NS},
        "data": {"token": "dG9rZW4="},
    }
    await k.post(f"/api/v1/namespaces/{NS}/secrets", json=secret)
    await until(
        lambda: pool_condition(k, "MetricsUnavailable").get("reason") == "PrometheusError", "a query tried"
    )
    assert (live(k, POOLS, NS, POOL) or {})["spec"]["replicas"] == 2
