"""The fast engine (decode cohort, multi-step runs) equals one-iteration-at-a-time reference stepping."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sloguard_testing.sim_engine import drive, finished_by_id, make_engine, random_workload

from sloguard.sim.engine import Finished, FirstToken, Preempted

CONFIGS = [
    {},  # roomy cache: no preemption, long decode runs
    {"num_gpu_blocks": 66},  # KV pressure under fcfs
    {"num_gpu_blocks": 70, "scheduling_policy": "priority"},
    {"num_gpu_blocks": 200, "max_num_seqs": 8, "scheduling_policy": "priority"},
    {"max_num_batched_tokens": 64, "max_num_seqs": 64},  # budget-bound: chunked prefills everywhere
    {"enable_chunked_prefill": False, "max_num_batched_tokens": 1024},
]


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c) for c in CONFIGS])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_path_matches_reference_stepping_bit_for_bit(seed: int, config: dict[str, object]) -> None:
    workload = random_workload(seed, 120)
    fast_events = drive(make_engine(fast=True, **config), workload)
    slow_events = drive(make_engine(fast=False, **config), workload)
    fast, slow = finished_by_id(fast_events), finished_by_id(slow_events)
    assert fast.keys() == slow.keys() == {r.request_id for _, r in workload}
    for rid, a in fast.items():
        b = slow[rid]
        assert np.array_equal(a.token_times_s, b.token_times_s), rid
        assert (a.finish_reason, a.num_preemptions, a.first_scheduled_s) == (
            b.finish_reason,
            b.num_preemptions,
            b.first_scheduled_s,
        )
    kinds = [
        (type(e).__name__, e.request_id, e.time_s)
        for e in fast_events
        if isinstance(e, FirstToken | Preempted)
    ]
    assert kinds == [
        (type(e).__name__, e.request_id, e.time_s)
        for e in slow_events
        if isinstance(e, FirstToken | Preempted)
    ]


@pytest.mark.parametrize("config", CONFIGS[:3], ids=[str(c) for c in CONFIGS[:3]])
def test_fast_path_matches_reference_with_aborts_mid_flight(config: dict[str, object]) -> None:
    workload = random_workload(5, 100)
    aborts = [(t + 0.37, r.request_id) for t, r in workload[::7]]  # some waiting, some running

    def run(fast: bool) -> dict[str, tuple[list[float], str, int]]:
        engine = make_engine(fast=fast, **config)
        timeline = sorted(
            [(t, 0, r.request_id, r) for t, r in workload] + [(t, 1, rid, None) for t, rid in aborts]
        )
        out: dict[str, tuple[list[float], str, int]] = {}
        for t, _kind, rid, req in timeline:
            for e in engine.advance_to(t):
                if isinstance(e, Finished):
                    out[e.request_id] = (e.token_times_s.tolist(), e.finish_reason, e.num_preemptions)
            if req is not None:
                engine.submit(req, t)
            elif (done := engine.abort(rid, t)) is not None:
                out[rid] = (done.token_times_s.tolist(), done.finish_reason, done.num_preemptions)
                snap = engine.snapshot()
                assert 0 <= snap.kv_blocks_used <= snap.kv_blocks_total
        for e in engine.run_until_idle():
            if isinstance(e, Finished):
                out[e.request_id] = (e.token_times_s.tolist(), e.finish_reason, e.num_preemptions)
        assert engine.snapshot().kv_blocks_used == 0
        return out

    fast, slow = run(True), run(False)
    assert fast == slow
    assert sum(1 for v in fast.values() if v[1] == "abort") >= 5


def test_the_pressure_configs_really_preempt() -> None:
    events = drive(make_engine(num_gpu_blocks=66), random_workload(0, 120))
    assert any(isinstance(e, Preempted) for e in events)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    blocks=st.integers(66, 400),
    policy=st.sampled_from(["fcfs", "priority"]),
    fast=st.booleans(),
)
def test_kv_blocks_never_exceed_capacity_and_tokens_are_conserved(
    seed: int, blocks: int, policy: str, fast: bool
) -> None:
    engine = make_engine(fast=fast, num_gpu_blocks=blocks, scheduling_policy=policy)
    workload = random_workload(seed, 40, rate_per_s=50.0)
    finished: list[Finished] = []
    pending = list(workload)
    while pending or engine.next_event_time_s() is not None:
        t_next = engine.next_event_time_s()
        if pending and (t_next is None or pending[0][0] <= t_next):
            t, req = pending.pop(0)
            finished += [e for e in engine.advance_to(t) if isinstance(e, Finished)]
            engine.submit(req, t)
        else:
            assert t_next is not None
            finished += [e for e in engine.advance_to(t_next) if isinstance(e, Finished)]
        snap = engine.snapshot()
        assert 0 <= snap.kv_blocks_used <= snap.kv_blocks_total
    assert engine.snapshot().kv_blocks_used == 0
    by_id = {e.request_id: e for e in finished}
    for _, req in workload:
        done = by_id[req.request_id]
        assert done.output_tokens == len(done.token_times_s)
        assert 1 <= done.output_tokens <= req.max_tokens
        if req.ignore_eos:
            assert done.output_tokens == req.max_tokens and done.finish_reason == "length"
        assert np.all(np.diff(done.token_times_s) > 0)
