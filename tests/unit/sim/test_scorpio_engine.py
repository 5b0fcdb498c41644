"""SCORPIO's in-engine scheduler and vLLM V0's scheduler as engine plug-ins: invariants and behaviour."""

import dataclasses
import random

import pytest
from sloguard_testing.sim_engine import drive, finished_by_id, toy_step_time

from sloguard.sidecar.core.latency import LatencyModel
from sloguard.sim.cosim import latency_model_from_profile
from sloguard.sim.engine import Engine, EngineConfig, Finished, FirstToken, SimRequest
from sloguard.sim.scorpio_engine import ScorpioEngineScheduler, ScorpioRequest
from sloguard.sim.v0_scheduler import VllmV0Scheduler

LATENCY: LatencyModel = latency_model_from_profile(
    toy_step_time(), max_num_batched_tokens=2048, max_len_tokens=2048
)
CONFIG = EngineConfig(
    num_gpu_blocks=400,
    max_num_seqs=64,
    max_num_batched_tokens=2048,
    max_model_len=2048,
    enable_chunked_prefill=False,
)


def workload(
    seed: int, n: int, rate: float
) -> tuple[list[tuple[float, SimRequest]], dict[str, ScorpioRequest]]:
    rng = random.Random(seed)
    t, arrivals, info = 0.0, [], {}
    for i in range(n):
        t += rng.expovariate(rate)
        out = rng.randint(4, 300)
        arrivals.append(
            (
                t,
                SimRequest(
                    f"r{i}", prompt_tokens=rng.randint(4, 1024), max_tokens=2048 - 1024, eos_after_tokens=out
                ),
            )
        )
        ttft, tpot = rng.choice([(0.5, 0.05), (3.0, 0.03), (15.0, 0.05)])
        info[f"r{i}"] = ScorpioRequest(ttft, tpot, predicted_output_tokens=float(rng.randint(4, 300)))
    return arrivals, info


@pytest.mark.parametrize(("seed", "rate"), [(1, 5.0), (2, 40.0), (3, 200.0)])
def test_scorpio_engine_ends_every_request_once_within_kv(seed: int, rate: float) -> None:
    arrivals, info = workload(seed, 60, rate)
    scheduler = ScorpioEngineScheduler(info, LATENCY)
    engine = Engine(CONFIG, toy_step_time(), scheduler=scheduler)
    events = drive(engine, arrivals)
    done = finished_by_id(events)
    assert set(done) == {req.request_id for _, req in arrivals}
    assert sum(isinstance(e, Finished) for e in events) == len(arrivals)
    snapshot = engine.snapshot()
    assert snapshot.running == 0 and snapshot.waiting == 0 and snapshot.kv_blocks_used == 0
    for request_id, event in done.items():
        if event.finish_reason == "reject":
            assert event.output_tokens == 0
        else:
            assert event.output_tokens == next(
                r.eos_after_tokens for _, r in arrivals if r.request_id == request_id
            )
    times = [e.time_s for e in events]
    assert times == sorted(times)
    assert scheduler.rejected_total == sum(e.finish_reason == "reject" for e in done.values())
    if rate >= 200.0:
        assert scheduler.rejected_total > 0  # overload: the TTFT guard refuses what cannot make it


def test_credit_batching_decodes_a_looser_tpot_every_other_iteration() -> None:
    info = {"tight": ScorpioRequest(60.0, 0.02, 50.0), "loose": ScorpioRequest(60.0, 0.04, 50.0)}
    engine = Engine(CONFIG, toy_step_time(), scheduler=ScorpioEngineScheduler(info, LATENCY))
    engine.submit(SimRequest("tight", prompt_tokens=16, max_tokens=41, eos_after_tokens=41), 0.0)
    engine.submit(SimRequest("loose", prompt_tokens=16, max_tokens=21, eos_after_tokens=21), 0.0)
    done = finished_by_id(engine.run_until_idle())
    # both prefill in the first iteration; then "loose" (credit 0.5 per iteration) joins every second one
    tight = done["tight"].token_times_s.tolist()
    loose = done["loose"].token_times_s.tolist()
    assert len(tight) == 41 and len(loose) == 21
    assert loose == tight[0::2]


def test_ttft_guard_rejects_what_cannot_start_in_time() -> None:
    info = {f"r{i}": ScorpioRequest(0.3, 0.05, 10.0) for i in range(30)}
    engine = Engine(CONFIG, toy_step_time(), scheduler=ScorpioEngineScheduler(info, LATENCY))
    for i in range(30):
        engine.submit(SimRequest(f"r{i}", prompt_tokens=1000, max_tokens=10, eos_after_tokens=10), 0.0)
    done = finished_by_id(engine.run_until_idle())
    rejected = [d for d in done.values() if d.finish_reason == "reject"]
    assert 0 < len(rejected) < 30 and len(done) == 30


def test_v0_scheduler_never_mixes_prefill_and_decode() -> None:
    arrivals, _ = workload(4, 80, 30.0)
    roomy = dataclasses.replace(CONFIG, num_gpu_blocks=20000)  # no preemption: a recompute emits a token
    engine = Engine(roomy, toy_step_time(), scheduler=VllmV0Scheduler(prefill_budget_tokens=1024))
    events = drive(engine, arrivals)
    done = finished_by_id(events)
    assert len(done) == 80 and all(d.finish_reason == "stop" for d in done.values())
    first_token_times = {e.time_s for e in events if isinstance(e, FirstToken)}
    later_token_times = {t for d in done.values() for t in d.token_times_s[1:].tolist()}
    assert not first_token_times & later_token_times  # an iteration is all prefill or all decode


def test_an_idle_engine_that_rejected_everything_still_reports_the_rejections() -> None:
    info = {f"r{i}": ScorpioRequest(0.01, 0.05, 10.0) for i in range(5)}
    engine = Engine(CONFIG, toy_step_time(), scheduler=ScorpioEngineScheduler(info, LATENCY))
    for i in range(5):
        engine.submit(SimRequest(f"r{i}", prompt_tokens=1000, max_tokens=10, eos_after_tokens=10), 1.0)
    done = finished_by_id(engine.run_until_idle())
    assert len(done) == 5 and all(d.finish_reason == "reject" and d.time_s == 1.0 for d in done.values())
    assert engine.next_event_time_s() is None
