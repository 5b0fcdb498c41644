"""The core in a closed loop in virtual time, as the cluster simulation will drive it.

A toy pool: each ready replica serves 10 requests of concurrency; what does not fit queues; replicas
asked for become ready after the 120 s start-up. Demand steps 20 → 60 → 20. The loop must restore an
empty queue within one start-up of the step, settle without oscillating, and come back down.
"""

import itertools
from dataclasses import dataclass, field

import pytest
from sloguard_testing.autoscaling import BATCH, context

from sloguard.api.inferencepool import PoolRole
from sloguard.operator.core.autoscaling import (
    AutoscalerLoop,
    AutoscalerPolicy,
    ClassSnapshot,
    PoolSnapshot,
    ReplicaCounts,
    SLOGuardPolicy,
)

CAP = 10.0
STARTUP_S = 120.0


@dataclass
class ToyPool:
    ready: int = 4
    starting: list[float] = field(default_factory=list)  # ready-at times

    def advance(self, now_s: float) -> None:
        done = [t for t in self.starting if t <= now_s]
        self.ready += len(done)
        self.starting = [t for t in self.starting if t > now_s]

    def scale_to(self, replicas: int, now_s: float) -> None:
        current = self.ready + len(self.starting)
        if replicas > current:
            self.starting += [now_s + STARTUP_S] * (replicas - current)
        for _ in range(current - replicas):
            if self.starting:
                self.starting.pop()
            else:
                self.ready -= 1

    def snapshot(self, demand: float, now_s: float) -> PoolSnapshot:
        served = min(demand, self.ready * CAP)
        queued = demand - served
        return PoolSnapshot(
            pool="toy",
            replicas=ReplicaCounts(self.ready + len(self.starting), self.ready, len(self.starting)),
            classes=(
                ClassSnapshot(
                    name="interactive",
                    arrival_rate_rps=demand,  # 1 s per request
                    in_flight=served,
                    queue_depth=queued,
                    attainment=1.0 if queued == 0 else 0.9,
                    ttft_p99_s=0.2 if queued == 0 else 2.0,
                ),
            ),
            observed_at_s=now_s - 5.0,
            scraped_pods=self.ready,
            in_flight_cap_total=self.ready * CAP,
        )


def demand_at(t: float) -> float:
    return 60.0 if 600.0 <= t < 1800.0 else 20.0


def test_step_up_and_down_in_virtual_time() -> None:
    pool = ToyPool()
    loop = AutoscalerLoop(SLOGuardPolicy(), context(startup_time_s=STARTUP_S))
    trace: list[tuple[float, int, float]] = []
    t = 0.0
    while t <= 3600.0:
        pool.advance(t)
        snap = pool.snapshot(demand_at(t), t)
        decision = loop.step(snap, t)
        pool.scale_to(decision.desired_replicas, t)
        trace.append((t, decision.desired_replicas, snap.classes[0].queue_depth or 0.0))
        t += 15.0

    queued_late = [(t, q) for t, _, q in trace if 600.0 + STARTUP_S + 15.0 <= t < 1800.0 and q > 0]
    assert queued_late == []  # one tick to see the step, one start-up to serve it
    high = {r for t, r, _ in trace if 1200.0 <= t < 1800.0}
    assert high == {8}  # 60 / (10 · 0.8) = 7.5 → 8: a step is not mistaken for a ramp
    assert trace[-1][1] == 3  # 20 · 1.2 / 8 = 3
    moves = [b - a for (_, a, _), (_, b, _) in itertools.pairwise(trace) if b != a]
    reversals = sum(1 for x, y in itertools.pairwise(moves) if (x > 0) != (y > 0))
    assert reversals == 2  # down (initial 4 → 3), up on the step, down after it
    assert all(-1 <= m <= 4 for m in moves)


TOKENS_PER_S = 500.0  # per ready replica


def drain_backlog(policy: AutoscalerPolicy, requests: int, waited_s: float) -> tuple[float | None, float]:
    """A backlog of `requests` × 100 tokens that has waited `waited_s`: (drained at, GPU-hours until then).

    The idle tail after draining is left out: its length is the spec's scale-down cooldown and step.
    """
    ctx = context(PoolRole.BATCH, (BATCH,), min_replicas=0, max_replicas=20, startup_time_s=STARTUP_S)
    loop = AutoscalerLoop(policy, ctx)
    pool = ToyPool(ready=1)
    tokens = requests * 100.0
    drained_at = None
    gpu_s = 0.0
    t = 0.0
    while t <= 5000.0:
        pool.advance(t)
        snap = PoolSnapshot(
            pool="batch",
            replicas=ReplicaCounts(pool.ready + len(pool.starting), pool.ready, len(pool.starting)),
            classes=(
                ClassSnapshot(
                    name="batch",
                    queue_depth=tokens / 100.0,
                    in_flight=0.0,
                    queue_oldest_age_s=waited_s + t if tokens > 0 else 0.0,
                    output_tokens_mean=100.0,
                    output_tokens_std=50.0,
                    arrival_rate_rps=0.0,
                ),
            ),
            observed_at_s=t,
            scraped_pods=pool.ready,
            in_flight_cap_total=pool.ready * 256.0,
            generation_tokens_per_s=pool.ready * TOKENS_PER_S if tokens > 0 else 0.0,
        )
        pool.scale_to(loop.step(snap, t).desired_replicas, t)
        tokens -= min(tokens, pool.ready * TOKENS_PER_S * 15.0)
        if drained_at is None:
            gpu_s += (pool.ready + len(pool.starting)) * 15.0
        if tokens <= 0 and drained_at is None:
            drained_at = t + 15.0
        t += 15.0
    return drained_at, gpu_s / 3600.0


@pytest.mark.parametrize(
    ("requests", "waited_s"), [(20_000, 0.0), (60_000, 0.0), (150_000, 0.0), (20_000, 2400.0)]
)
def test_batch_backlog_meets_its_deadline_without_waste(requests: int, waited_s: float) -> None:
    drained_at, gpu_hours = drain_backlog(SLOGuardPolicy(), requests, waited_s)
    assert drained_at is not None and waited_s + drained_at <= 3600.0 - 360.0  # inside the 10 % margin
    ideal = requests * 100.0 / TOKENS_PER_S / 3600.0
    assert gpu_hours <= 1.35 * ideal
