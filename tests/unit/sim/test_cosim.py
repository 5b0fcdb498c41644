"""The co-simulation harness: policies in front of the simulated engine, in virtual time."""

import random

import pytest

from sloguard.api import SchedulingPolicyName
from sloguard.api.sidecar_config import PolicyConfig, SidecarConfig, SLOClassConfig
from sloguard.predictor import ClassMeanPredictor
from sloguard.sidecar.core.registry import create_policy
from sloguard.sidecar.core.requests import InvalidRequestError, Outcome, RequestSpec
from sloguard.sim.cosim import SimulatedReplica, latency_model_from_profile, run_replica, summarise
from sloguard.sim.engine import BatchShape, Engine, EngineConfig
from sloguard.sim.profiles import load_profile

PROFILE = load_profile("llama-3-8b-a100")
CLASSES = [
    SLOClassConfig(name="interactive", ttft_s=0.5, tpot_s=0.05, priority=100),
    SLOClassConfig(name="standard", ttft_s=3.0, tpot_s=0.03, priority=50, default=True),
    SLOClassConfig(name="relaxed", ttft_s=15.0, tpot_s=0.05),
]
LATENCY = latency_model_from_profile(PROFILE.step_time())


def make_replica(policy_name: str, *, num_gpu_blocks: int | None = None, seed: int = 0) -> SimulatedReplica:
    config = SidecarConfig(classes=CLASSES, policy=PolicyConfig(name=SchedulingPolicyName(policy_name)))
    predictor = ClassMeanPredictor.fit([(c.name, 200) for c in CLASSES])
    policy = create_policy(config, predictor=predictor, latency=LATENCY, seed=seed)
    engine = Engine(
        EngineConfig(num_gpu_blocks=num_gpu_blocks or PROFILE.default_num_gpu_blocks, seed=seed),
        PROFILE.step_time(),
    )
    return SimulatedReplica(policy, engine, block_size=PROFILE.block_size)


def workload(n: int, rate_rps: float, seed: int) -> list[RequestSpec]:
    rng = random.Random(seed)
    t, specs = 0.0, []
    for i in range(n):
        t += rng.expovariate(rate_rps)
        output = rng.randint(1, 400)
        specs.append(
            RequestSpec.from_class(
                rng.choice(CLASSES),
                request_id=f"r{i}",
                prompt_tokens=rng.randint(1, 1500),
                max_tokens=512,
                arrival_s=t,
                true_output_tokens=output,
            )
        )
    return specs


def test_one_request_takes_one_prefill_then_decode_steps() -> None:
    replica = make_replica("fcfs")
    spec = RequestSpec.from_class(
        CLASSES[0], request_id="solo", prompt_tokens=512, max_tokens=64, arrival_s=1.0, true_output_tokens=10
    )
    (record,) = run_replica(replica, [spec])
    step = PROFILE.step_time()
    prefill_s = step.step_s(BatchShape(0, 0, ((512, 0),)))
    assert record.outcome is Outcome.COMPLETED and record.output_tokens == 10
    assert record.ttft_s == pytest.approx(prefill_s, rel=1e-9)
    assert record.met(spec)


@pytest.mark.parametrize("policy_name", [p.value for p in SchedulingPolicyName])
def test_every_request_ends_exactly_once_under_overload(policy_name: str) -> None:
    specs = workload(150, rate_rps=40.0, seed=7)
    replica = make_replica(policy_name, num_gpu_blocks=600)
    records = run_replica(replica, specs)
    assert [r.request_id for r in records] == [s.request_id for s in specs]
    counts = replica.policy.ledger.counts()
    assert counts.open == 0
    assert sum(counts.outcomes.values()) == len(specs)
    assert counts.total(Outcome.REJECTED) == sum(r.outcome is Outcome.REJECTED for r in records)
    assert replica.engine.snapshot().running == 0 and replica.policy.snapshot().in_flight == 0
    summary = summarise(records, {s.request_id: s for s in specs})
    assert summary["all"].requests == 150
    assert summary["all"].completed + summary["all"].rejected == 150


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_sloguard_meets_more_slos_than_scorpio_on_a_kv_starved_engine(seed: int) -> None:
    """150 requests at 40 req/s onto 600 KV blocks: the sidecar must not release what the engine cannot
    hold (sloguard reserves KV for the in-flight requests' predicted lengths). Measured: 72 / 65 / 79 met
    against scorpio's 53 / 32 / 50 (before the reservation sloguard met 26 / 12 / 43)."""
    specs = workload(150, rate_rps=40.0, seed=seed)
    by_id = {s.request_id: s for s in specs}
    met = {}
    for name in ("scorpio", "sloguard"):
        records = run_replica(make_replica(name, num_gpu_blocks=600), specs)
        met[name] = sum(r.met(by_id[r.request_id]) for r in records)
    assert met["sloguard"] > met["scorpio"]


def test_identical_inputs_give_identical_records() -> None:
    specs = workload(80, rate_rps=20.0, seed=3)
    first = run_replica(make_replica("sloguard"), specs)
    second = run_replica(make_replica("sloguard"), specs)
    assert first == second


def test_profile_seeded_latency_model_agrees_with_the_engine() -> None:
    step = PROFILE.step_time()
    assert LATENCY.ttft_at_position_s(512) == pytest.approx(
        step.step_s(BatchShape(0, 0, ((512, 0),))), rel=0.15
    )
    assert LATENCY.itl_s(32, 1024) == pytest.approx(step.step_s(BatchShape(32, 32 * 1024)), rel=0.15)


def _prefixed(request_id: str, arrival_s: float, hashes: tuple[int, ...] | None) -> RequestSpec:
    return RequestSpec.from_class(
        CLASSES[2],
        request_id=request_id,
        prompt_tokens=1200,
        max_tokens=64,
        arrival_s=arrival_s,
        true_output_tokens=8,
        prefix_hashes=hashes,
        prefix_block_tokens=512 if hashes is not None else 0,
    )


def test_prefix_hashes_reach_the_engine_and_a_shared_prefix_hits_its_cache() -> None:
    """The second request shares the first's two 512-token hash blocks: the engine (prefix caching on, as
    vLLM's default) serves 1024 of its prompt tokens from cache; a request without hashes hits nothing."""
    specs = [_prefixed("a", 0.0, (1, 2, 3)), _prefixed("b", 5.0, (1, 2, 9)), _prefixed("c", 10.0, None)]
    records = run_replica(make_replica("fcfs"), specs)
    assert [r.cached_tokens for r in records] == [0, 1024, 0]
    assert all(r.outcome is Outcome.COMPLETED for r in records)


def test_requests_without_prefix_hashes_run_exactly_as_before() -> None:
    """Requests with no prefix information take no part in prefix caching: nothing is cached for them
    (the benchmarks' results for such workloads are unchanged; checked on `scorpio --quick`)."""
    specs = workload(60, rate_rps=20.0, seed=5)
    records = run_replica(make_replica("sloguard"), specs)
    assert all(r.cached_tokens == 0 for r in records)
    assert records == run_replica(make_replica("sloguard"), specs)


@pytest.mark.parametrize(
    ("hashes", "block_tokens", "match"),
    [((1, 2), 0, "prefix_block_tokens"), ([1, 2], 512, "tuple of integers"), ((1, "x"), 512, "tuple of")],
)
def test_malformed_prefix_information_is_rejected_with_a_clear_error(
    hashes: object, block_tokens: int, match: str
) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        RequestSpec.from_class(
            CLASSES[0],
            request_id="bad",
            prompt_tokens=10,
            max_tokens=10,
            arrival_s=0.0,
            prefix_hashes=hashes,  # type: ignore[arg-type]
            prefix_block_tokens=block_tokens,
        )
