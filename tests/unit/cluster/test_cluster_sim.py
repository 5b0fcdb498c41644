"""The cluster simulation: cold starts, drains, exactly-once endings, determinism, honest snapshots."""

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from sloguard.api.inferencepool import (
    AutoscalingSpec,
    EngineSpec,
    InferencePoolSpec,
    PoolRole,
    SidecarLimits,
    SidecarSpec,
)
from sloguard.operator.core.autoscaling import (
    AutoscalerLoop,
    CapBounds,
    PoolSnapshot,
    Recommendation,
    ScalingContext,
    ScalingHistory,
    SLOGuardPolicy,
)
from sloguard.sidecar.core.requests import Outcome, RequestSpec
from sloguard.sim.cluster import ClusterConfig, ClusterSimulation, Phase
from sloguard.sim.cluster.workload import INTERACTIVE, batch_class

BATCH = batch_class(deadline_s=600.0)
CLASSES = (INTERACTIVE, BATCH)
STARTUP_S = 30.0


def spec(max_replicas: int = 4, scale_down_cooldown: str = "20s") -> InferencePoolSpec:
    return InferencePoolSpec(
        model="m",
        engine=EngineSpec(image="vllm", startup_time=f"{STARTUP_S:.0f}s"),
        slo_classes=["interactive", "batch"],
        min_replicas=1,
        max_replicas=max_replicas,
        role=PoolRole.MIXED,
        autoscaling=AutoscalingSpec(
            enabled=True,
            prometheus_url="http://p",
            interval="5s",
            scale_up_cooldown="5s",
            scale_down_cooldown=scale_down_cooldown,
        ),
        sidecar=SidecarSpec(limits=SidecarLimits(max_in_flight=16)),
    )


def workload(seed: int, n_interactive: int = 150, n_batch: int = 60, span_s: float = 90.0) -> ClusterConfig:
    rng = random.Random(seed)
    interactive = [
        RequestSpec.from_class(
            INTERACTIVE,
            request_id=f"i{i}",
            prompt_tokens=rng.randint(50, 1500),
            max_tokens=512,
            arrival_s=rng.uniform(0.0, span_s),
            true_output_tokens=rng.randint(5, 300),
        )
        for i in range(n_interactive)
    ]
    batch = [
        RequestSpec.from_class(
            BATCH,
            request_id=f"b{i}",
            prompt_tokens=rng.randint(50, 1500),
            max_tokens=512,
            arrival_s=0.0,
            true_output_tokens=rng.randint(5, 300),
        )
        for i in range(n_batch)
    ]
    return ClusterConfig(
        spec=spec(),
        classes=CLASSES,
        interactive=tuple(interactive),
        batch=tuple(batch),
        horizon_s=span_s,
        initial_replicas=1,
        seed=seed,
        batch_queue_per_pod=2,
    )


@dataclass
class Scripted:
    """An autoscaler policy that asks for a scripted count by time, and keeps what it was shown."""

    plan: Callable[[float], int]
    check: Callable[[PoolSnapshot, float], None] | None = None
    seen: list[PoolSnapshot] = field(default_factory=list)
    name: str = "scripted"

    def recommend(
        self, snapshot: PoolSnapshot, context: ScalingContext, history: ScalingHistory, now_s: float
    ) -> Recommendation:
        self.seen.append(snapshot)
        if self.check is not None:
            self.check(snapshot, now_s)
        return Recommendation(self.plan(now_s), "scripted", CapBounds(1, 16))


def loop_for(config: ClusterConfig, policy: object) -> AutoscalerLoop:
    return AutoscalerLoop(policy, ScalingContext.from_spec(config.spec, list(config.classes)))  # type: ignore[arg-type]


def test_a_new_pod_takes_no_traffic_before_its_cold_start_ends() -> None:
    config = workload(seed=1, n_batch=300)
    sim = ClusterSimulation(config, loop_for(config, Scripted(lambda t: 2 if t >= 10.0 else 1)))
    result = sim.run()
    late = sim.pods[1]
    assert late.created_s == pytest.approx(10.0)
    assert late.ready_s == pytest.approx(10.0 + STARTUP_S)
    routed = sim.routed_to
    to_late = [rid for rid, i in routed.items() if i == 1]
    assert any(r.startswith("i") for r in to_late) and any(r.startswith("b") for r in to_late)
    assert min(sim.routed_at_s[rid] for rid in to_late) >= late.ready_s
    # interactive requests arrived during its cold start, and all went to the warm pod
    during = [s for s in config.interactive if late.created_s <= s.arrival_s < late.ready_s]
    assert during and all(routed[s.request_id] == 0 for s in during)
    # the pod's GPU time runs from creation
    assert late.gpu_seconds(result.end_s) == pytest.approx(result.end_s - late.created_s)


def test_a_drained_pod_finishes_what_it_holds_and_then_goes() -> None:
    config = workload(seed=2)
    sim = ClusterSimulation(config, loop_for(config, Scripted(lambda t: 1 if t >= 60.0 else 2)))
    result = sim.run()
    drained = [p for p in sim.pods if p.drain_started_s is not None]
    assert len(drained) == 1
    pod = drained[0]
    index = sim.pods.index(pod)
    drain_s = pod.drain_started_s
    assert drain_s is not None
    assert pod.phase is Phase.REMOVED and pod.removed_s is not None
    mine = [rid for rid, i in sim.routed_to.items() if i == index]
    held = [rid for rid in mine if (result.records[rid].finish_s or 0.0) > drain_s]
    assert held, "the drained pod held no requests: the test would prove nothing"
    assert all(result.records[rid].outcome is Outcome.COMPLETED for rid in held)
    assert pod.removed_s == pytest.approx(max(result.records[rid].finish_s or 0.0 for rid in mine))
    # nothing new was routed to it after the drain began, while the other pod kept taking work
    assert max(sim.routed_at_s[rid] for rid in mine) <= drain_s
    others = [rid for rid, i in sim.routed_to.items() if i != index]
    assert max(sim.routed_at_s[rid] for rid in others) > drain_s
    assert pod.gpu_seconds(result.end_s) == pytest.approx(pod.removed_s - pod.created_s)


@pytest.mark.parametrize("seed", [3, 4])
def test_every_request_ends_exactly_once_across_the_cluster(seed: int) -> None:
    config = workload(seed=seed, n_interactive=200, n_batch=80)
    plan = [1, 3, 2, 1, 2, 1]
    sim = ClusterSimulation(
        config, loop_for(config, Scripted(lambda t: plan[min(int(t // 30), len(plan) - 1)]))
    )
    result = sim.run()
    every = {s.request_id for s in (*config.interactive, *config.batch)}
    assert set(result.records) == every
    per_pod = [set(p.records) for p in sim.pods]
    assert sum(len(r) for r in per_pod) == len(every)  # no request ended on two pods
    for pod in sim.pods:
        counts = pod.policy.ledger.counts()
        assert counts.open == 0
        assert sum(counts.outcomes.values()) == len(pod.records)
        assert pod.phase is Phase.REMOVED
    assert len(sim.pods) >= 3 and any(p.drain_started_s is not None for p in sim.pods)


def test_the_same_seed_gives_the_same_run() -> None:
    def once() -> tuple[object, ...]:
        config = workload(seed=7)
        result = ClusterSimulation(config, loop_for(config, SLOGuardPolicy())).run()
        return (
            result.records,
            result.gpu_seconds,
            [(d.time_s, d.desired_replicas, d.reason) for d in result.decisions],
        )

    assert once() == once()


def test_the_autoscaler_sees_the_simulated_state() -> None:
    config = workload(seed=8, n_batch=120)
    holder: dict[str, ClusterSimulation] = {}
    checked: list[float] = []

    def check(snap: PoolSnapshot, now_s: float) -> None:
        sim = holder["sim"]
        live = [p for p in sim.pods if p.phase in (Phase.READY, Phase.DRAINING)]
        assert snap.observed_at_s == now_s == sim.now_s
        assert snap.replicas.ready == sum(p.phase is Phase.READY for p in sim.pods)
        assert snap.replicas.starting == sum(p.phase is Phase.STARTING for p in sim.pods)
        assert snap.replicas.current == snap.replicas.ready + snap.replicas.starting
        assert snap.scraped_pods == len(live)
        assert snap.in_flight_cap_total == sum(p.in_flight_cap or 0 for p in live)
        queued = sum(p.queued for p in live) + len(sim._batch_queue)
        assert sum(c.queue_depth or 0.0 for c in snap.classes) == queued
        assert sum(c.in_flight or 0.0 for c in snap.classes) == sum(p.in_flight for p in live)
        batch = snap.class_named("batch")
        assert batch is not None
        gateway_batch = sum(1 for s in sim._batch_queue if s.slo_class == "batch")
        in_pods = sum(p.policy.snapshot().queued_by_class.get("batch", 0) for p in live)
        assert batch.queue_depth == gateway_batch + in_pods
        kv = [p.engine.snapshot().kv_cache_usage for p in live]
        assert snap.kv_usage_max == max(kv) and snap.kv_usage_mean == pytest.approx(sum(kv) / len(kv))
        assert snap.engine_running == sum(p.engine.snapshot().running for p in live)
        assert snap.engine_waiting == sum(p.engine.snapshot().waiting for p in live)
        for cls in CLASSES:
            ended = [
                r
                for r in sim.records.values()
                if r.slo_class == cls.name and r.finish_s is not None and now_s - 60.0 < r.finish_s <= now_s
            ]
            got = snap.class_named(cls.name)
            assert got is not None
            assert got.arrival_rate_rps == pytest.approx(len(ended) / 60.0)
            if ended:
                met = sum(r.met(sim.specs[r.request_id]) for r in ended) / len(ended)
                assert got.attainment == pytest.approx(met)
                worst = max(r.ttft_s or 0.0 for r in ended)
                assert got.ttft_p99_s is not None and got.ttft_p99_s <= worst + 1e-9
            else:
                assert got.attainment is None
            completed = [
                r
                for r in sim.records.values()
                if r.slo_class == cls.name
                and r.outcome is Outcome.COMPLETED
                and r.finish_s is not None
                and now_s - 600.0 < r.finish_s <= now_s
            ]
            if completed:
                # what the queued work was priced at: the gateway's prediction for batch, the pod's otherwise
                predicted = [
                    sim._batch_predicted[r.request_id]
                    if cls is BATCH
                    else sim.pods[sim.routed_to[r.request_id]].predicted_tokens[r.request_id]
                    for r in completed
                ]
                assert got.predicted_tokens_mean == pytest.approx(sum(predicted) / len(predicted))
                assert got.output_tokens_mean == pytest.approx(
                    sum(r.output_tokens for r in completed) / len(completed)
                )
            else:
                assert got.predicted_tokens_mean is None
        if batch.queue_depth:
            oldest = max(
                now_s - sim.specs[rid].arrival_s for rid in sim._open_arrivals if rid.startswith("b")
            )
            assert batch.queue_oldest_age_s == pytest.approx(oldest)
            assert batch.queue_predicted_tokens is not None and batch.queue_predicted_tokens > 0
        if snap.generation_tokens_per_s is not None:
            assert math.isfinite(snap.generation_tokens_per_s) and snap.generation_tokens_per_s >= 0
        checked.append(now_s)

    policy = Scripted(lambda t: 2 if 10.0 <= t < 60.0 else 1, check=check)
    sim = ClusterSimulation(config, loop_for(config, policy), keep_snapshots=True)
    holder["sim"] = sim
    result = sim.run()
    assert len(checked) == len(result.decisions) >= 10
    assert all(a is b for a, b in zip(policy.seen, sim.snapshots, strict=True))
    assert any(s.replicas.starting for s in policy.seen) and any(s.replicas.ready == 2 for s in policy.seen)
