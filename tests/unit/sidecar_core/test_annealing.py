"""Simulated annealing: deterministic per seed, never worse than where it started, respects group caps."""

import random

from sloguard.sidecar.core.annealing import SaJob, anneal, evaluate
from sloguard.sidecar.core.latency import LatencyModel


def jobs() -> list[SaJob]:
    loose = [SaJob(0.0, 500, 300, ttft_s=60.0, tpot_s=0.2, deadline_s=None) for _ in range(5)]
    tight = SaJob(0.0, 100, 20, ttft_s=0.3, tpot_s=0.05, deadline_s=None)
    return [*loose, tight]  # the tight request starts last in index order


def test_the_same_seed_gives_the_same_plan() -> None:
    a = anneal(
        jobs(),
        now_s=0.0,
        running=0,
        first_group_cap=2,
        group_cap=2,
        latency=LatencyModel(),
        rng=random.Random(7),
        iterations=200,
    )
    b = anneal(
        jobs(),
        now_s=0.0,
        running=0,
        first_group_cap=2,
        group_cap=2,
        latency=LatencyModel(),
        rng=random.Random(7),
        iterations=200,
    )
    assert a == b


def test_annealing_never_returns_a_plan_worse_than_the_initial_one_and_finds_the_urgent_request() -> None:
    latency = LatencyModel()
    initial, initial_met = evaluate(jobs(), list(range(6)), [2, 2, 2], now_s=0.0, running=0, latency=latency)
    plan = anneal(
        jobs(),
        now_s=0.0,
        running=0,
        first_group_cap=2,
        group_cap=2,
        latency=latency,
        rng=random.Random(0),
        iterations=300,
    )
    assert plan.objective >= initial
    assert plan.met >= initial_met + 1  # the tight request moves into the first group
    assert 5 in plan.order[: plan.sizes[0]]
    assert sorted(plan.order) == list(range(6))
    assert sum(plan.sizes) == 6 and plan.sizes[0] <= 2 and all(1 <= s <= 2 for s in plan.sizes)


def test_zero_iterations_return_the_initial_plan_and_no_jobs_an_empty_one() -> None:
    plan = anneal(
        jobs(),
        now_s=0.0,
        running=0,
        first_group_cap=3,
        group_cap=4,
        latency=LatencyModel(),
        rng=random.Random(0),
        iterations=0,
    )
    assert plan.order == tuple(range(6)) and plan.sizes == (3, 3)
    empty = anneal(
        [],
        now_s=0.0,
        running=0,
        first_group_cap=1,
        group_cap=1,
        latency=LatencyModel(),
        rng=random.Random(0),
        iterations=10,
    )
    assert empty.order == () and empty.sizes == ()
