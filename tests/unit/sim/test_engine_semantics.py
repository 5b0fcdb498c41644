"""vLLM V1 semantics of the simulated engine: analytic timings, preemption, priority, determinism."""

import numpy as np
import pytest
from sloguard_testing.sim_engine import drive, finished_by_id, make_engine, random_workload, toy_step_time

from sloguard.sim.engine import (
    BatchShape,
    Engine,
    EngineConfig,
    Finished,
    FirstToken,
    Preempted,
    SchedulingPolicy,
    SimRequest,
)


@pytest.mark.parametrize("fast", [True, False])
def test_one_request_ttft_is_one_prefill_step_and_tpot_one_decode_step(fast: bool) -> None:
    engine = make_engine(fast=fast)
    engine.submit(SimRequest("a", prompt_tokens=100, max_tokens=5, ignore_eos=True), 1.0)
    (done,) = [e for e in engine.run_until_idle() if isinstance(e, Finished)]
    st = toy_step_time()
    expected = [1.0 + st.step_s(BatchShape(0, 0, [(100, 0)]))]
    for i in range(4):
        expected.append(expected[-1] + st.step_s(BatchShape(1, 101 + i)))
    assert done.token_times_s.tolist() == expected
    assert done.finish_reason == "length" and done.output_tokens == 5


def test_n_concurrent_requests_step_as_the_profile_says() -> None:
    engine = make_engine()
    for i in range(8):
        engine.submit(SimRequest(f"r{i}", prompt_tokens=50, max_tokens=10, ignore_eos=True), 0.0)
    done = finished_by_id(engine.run_until_idle())
    st = toy_step_time()
    t = st.step_s(BatchShape(0, 0, [(50, 0)] * 8))
    expected = [t]
    for i in range(9):
        t += st.step_s(BatchShape(8, 8 * (51 + i)))
        expected.append(t)
    for e in done.values():
        assert e.token_times_s.tolist() == pytest.approx(expected, rel=1e-12)


def test_chunked_prefill_splits_a_long_prompt_over_the_token_budget() -> None:
    engine = make_engine(max_num_batched_tokens=64)
    engine.submit(SimRequest("long", prompt_tokens=200, max_tokens=2, ignore_eos=True), 0.0)
    (done,) = [e for e in engine.run_until_idle() if isinstance(e, Finished)]
    st = toy_step_time()
    chunks = [(64, 0), (64, 64), (64, 128), (8, 192)]
    assert done.token_times_s[0] == pytest.approx(sum(st.step_s(BatchShape(0, 0, [c])) for c in chunks))


def _kv_scenario(
    policy: SchedulingPolicy, prios: list[int], gap_s: float = 0.02
) -> tuple[list[object], dict[str, Finished]]:
    """vllm-behaviour.md §2.3/§2.4: 5 blocks of 128 tokens (4 usable), 100-token prompts, 300 tokens out."""
    engine = Engine(
        EngineConfig(
            num_gpu_blocks=5, block_size=128, max_num_seqs=8, max_model_len=512, scheduling_policy=policy
        ),
        toy_step_time(),
    )
    events: list[object] = []
    for i, p in enumerate(prios):
        events += engine.advance_to(i * gap_s)
        engine.submit(
            SimRequest("ABC"[i], prompt_tokens=100, max_tokens=300, ignore_eos=True, priority=p), i * gap_s
        )
    events += engine.run_until_idle()
    return events, finished_by_id(events)  # type: ignore[arg-type]


def test_priority_preemption_victim_is_the_worst_priority_then_latest() -> None:
    events, done = _kv_scenario("priority", [0, 10, 5])
    victims = [e.request_id for e in events if isinstance(e, Preempted)]
    assert victims[0] == "B"  # priority 10 goes first, at its 128-token block boundary
    assert "A" not in victims and "C" in victims
    assert done["A"].num_preemptions == 0
    assert all(d.output_tokens == 300 for d in done.values())  # recompute loses nothing
    # the first victim stalled right after token 28 (100 prompt + 28 = 128 = one full block)
    gaps = np.diff(done["B"].token_times_s)
    assert int(np.argmax(gaps)) == 28


def test_fcfs_preemption_victim_is_the_last_admitted_whatever_its_priority() -> None:
    events, done = _kv_scenario("fcfs", [10, -5])
    victims = [e.request_id for e in events if isinstance(e, Preempted)]
    assert victims and set(victims) == {"B"}
    assert done["A"].num_preemptions == 0 and done["B"].output_tokens == 300


def test_a_waiting_request_never_preempts_running_ones() -> None:
    # §2.2: A and B fill the 4 usable blocks; urgent C waits until A finishes
    engine = Engine(
        EngineConfig(
            num_gpu_blocks=5, block_size=128, max_num_seqs=8, max_model_len=512, scheduling_policy="priority"
        ),
        toy_step_time(),
    )
    events = []
    for i, (rid, prompt, prio) in enumerate([("A", 200, 10), ("B", 200, 10), ("C", 100, 0)]):
        events += engine.advance_to(i * 0.02)
        engine.submit(
            SimRequest(rid, prompt_tokens=prompt, max_tokens=50, ignore_eos=True, priority=prio), i * 0.02
        )
    events += engine.run_until_idle()
    done = finished_by_id(events)
    assert not any(isinstance(e, Preempted) for e in events)
    assert done["C"].token_times_s[0] > min(done["A"].time_s, done["B"].time_s)


@pytest.mark.parametrize(("policy", "order"), [("priority", "ABCFDE"), ("fcfs", "ABEDCF")])
def test_waiting_order_follows_the_policy(policy: SchedulingPolicy, order: str) -> None:
    # §2.1: max_num_seqs 2; A,B,E,D,C,F with priorities 10,10,10,5,0,0, sent at the measured offsets
    engine = make_engine(max_num_seqs=2, scheduling_policy=policy)
    events = []
    sent_ms = [2, 23, 83, 102, 123, 142]
    for rid, prio, ms in zip("ABEDCF", [10, 10, 10, 5, 0, 0], sent_ms, strict=True):
        events += engine.advance_to(ms / 1000)
        req = SimRequest(rid, prompt_tokens=10, max_tokens=200, ignore_eos=True, priority=prio)
        engine.submit(req, ms / 1000)
    events += engine.run_until_idle()
    firsts = [e.request_id for e in events if isinstance(e, FirstToken)]
    assert "".join(firsts) == order
    assert not any(isinstance(e, Preempted) for e in events)


def test_identical_seeds_give_identical_results_and_other_seeds_differ() -> None:
    wl = [(t, SimRequest(r.request_id, r.prompt_tokens, max_tokens=500)) for t, r in random_workload(3, 60)]

    def lengths(seed: int) -> list[int]:
        done = finished_by_id(drive(make_engine(seed=seed, max_model_len=1200), wl))
        return [done[r.request_id].output_tokens for _, r in wl]

    assert lengths(7) == lengths(7)
    assert lengths(7) != lengths(8)


def test_abort_frees_blocks_and_reports_abort() -> None:
    engine = make_engine()
    engine.submit(SimRequest("a", prompt_tokens=300, max_tokens=500, ignore_eos=True), 0.0)
    engine.submit(SimRequest("w", prompt_tokens=10, max_tokens=5), 0.0)
    engine.advance_to(0.5)
    assert engine.snapshot().kv_blocks_used > 0
    produced = engine.output_tokens("a")
    done = engine.abort("a", 0.5)
    assert done is not None and done.finish_reason == "abort" and done.output_tokens == produced > 0
    assert engine.abort("a", 0.5) is None
    engine.run_until_idle()
    assert engine.snapshot().kv_blocks_used == 0 and engine.snapshot().running == 0


def test_min_tokens_and_eos_lengths() -> None:
    engine = make_engine()
    engine.submit(SimRequest("eos", prompt_tokens=5, max_tokens=10, eos_after_tokens=1), 0.0)
    engine.submit(SimRequest("min", prompt_tokens=5, max_tokens=10, min_tokens=4, eos_after_tokens=1), 0.0)
    engine.submit(SimRequest("cap", prompt_tokens=5, max_tokens=6, min_tokens=4, eos_after_tokens=50), 0.0)
    done = finished_by_id(engine.run_until_idle())
    assert (done["eos"].output_tokens, done["eos"].finish_reason) == (1, "stop")
    assert (done["min"].output_tokens, done["min"].finish_reason) == (5, "stop")
    assert (done["cap"].output_tokens, done["cap"].finish_reason) == (6, "length")


@pytest.mark.parametrize(("prompt", "max_tokens", "min_tokens"), [(0, 1, 0), (1, 0, 0), (1, 2, 3)])
def test_bad_requests_are_rejected(prompt: int, max_tokens: int, min_tokens: int) -> None:
    with pytest.raises(ValueError):
        SimRequest("x", prompt_tokens=prompt, max_tokens=max_tokens, min_tokens=min_tokens)


def test_engine_refuses_a_cache_smaller_than_max_model_len() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        EngineConfig(num_gpu_blocks=4, block_size=128, max_model_len=512)
