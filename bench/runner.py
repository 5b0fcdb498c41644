"""Run one named policy variant over a workload on the calibrated engine, and score the records.

Shared by the scenario modules. Everything goes through the co-simulation harness
(`sloguard.sim.cosim`): the sidecar policy (built by `registry.create_policy`, exactly the code the sidecar
runs) in front of the simulated vLLM (`sloguard.sim.engine`) with a measured step-time profile.

Variant names are the registered policy names plus:
- `fcfs` is vLLM's default with nothing in front: the sidecar passes every request straight through (no
  KV gating, no cap), the engine's FIFO queue does the rest;
- `fcfs-v0`: vLLM V0's prefill-first scheduler (`sloguard.sim.v0_scheduler`), the paper's "vLLM";
- `scorpio-engine`: SCORPIO inside the engine (`sloguard.sim.scorpio_engine`) behind a pass-through;
- `oracle_<name>`: the same policy told each request's true output length (an upper bound).
Every variant runs on the engine settings deployed beside it: vLLM's `--scheduling-policy` as the operator
sets it for the policy (`deployed_engine_scheduling`), and SCORPIO's credit-batching accounting only where
the engine batches by credit (`policy_parameters`). Goodput and adherence are defined once, here (`Score`,
`score`): met requests per second of the offered window (first to last arrival), and met / offered.
Virtual time: results depend only on the inputs and seeds.
"""

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sloguard.api import SchedulingPolicyName
from sloguard.api.inferencepool import InferencePool
from sloguard.api.sidecar_config import PolicyConfig, SidecarConfig, SLOClassConfig
from sloguard.operator.core.children import engine_args
from sloguard.predictor import load_default_predictor
from sloguard.sidecar.core.latency import LatencyModel
from sloguard.sidecar.core.registry import create_policy
from sloguard.sidecar.core.requests import Outcome, RequestSpec
from sloguard.sim.cosim import RequestRecord, SimulatedReplica, latency_model_from_profile, run_replica
from sloguard.sim.engine import BatchScheduler, Engine, EngineConfig, SchedulingPolicy, StepTimeModel
from sloguard.sim.profiles import load_profile
from sloguard.sim.scorpio_engine import ScorpioEngineScheduler, ScorpioRequest
from sloguard.sim.v0_scheduler import VllmV0Scheduler

ENGINE_SCORPIO = "scorpio-engine"
V0_FCFS = "fcfs-v0"
ORACLE_PREFIX = "oracle_"
SCHEDULING_FLAG = "--scheduling-policy"


@dataclass(frozen=True)
class EngineSetup:
    """The simulated engine: a profile from sim/profiles and vLLM's scheduler knobs."""

    profile: str = "llama-3-8b-a100"
    max_num_batched_tokens: int = 8192
    max_model_len: int = 8192
    max_num_seqs: int = 256
    enable_chunked_prefill: bool = True
    num_gpu_blocks: int | None = None  # None: the profile's measured default
    scorpio_prefill_budget_tokens: int = 1024  # the paper's --max-num-batched-tokens, in SCORPIO's V0 loop
    policy_parameters: dict[str, dict[str, Any]] = field(default_factory=dict)  # per policy name

    def engine_config(self, seed: int, scheduling_policy: SchedulingPolicy = "fcfs") -> EngineConfig:
        profile = load_profile(self.profile)
        return EngineConfig(
            scheduling_policy=scheduling_policy,
            num_gpu_blocks=self.num_gpu_blocks or profile.default_num_gpu_blocks,
            block_size=profile.block_size,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            max_model_len=self.max_model_len,
            enable_chunked_prefill=self.enable_chunked_prefill,
            seed=seed,
        )

    def latency_model(self, step_time: StepTimeModel | None = None) -> LatencyModel:
        """The sidecar's latency model priced by the engine's step times (the profile's unless given)."""
        return latency_model_from_profile(
            step_time or load_profile(self.profile).step_time(),
            max_num_batched_tokens=self.max_num_batched_tokens,
            max_prompt_tokens=self.max_model_len,
            max_batch=self.max_num_seqs,
            max_len_tokens=self.max_model_len,
        )


@functools.cache
def deployed_engine_scheduling(policy: SchedulingPolicyName) -> SchedulingPolicy:
    """The vLLM `--scheduling-policy` the operator deploys beside `policy`, read from the operator's own
    engine flags (`operator.core.children.engine_args`), so the benchmarks cannot drift from a copy:
    `priority` for the policies that stamp request priorities (sloguard, edf), vLLM's default `fcfs`
    for the others."""
    pool = InferencePool.model_validate(
        {
            "metadata": {"name": "bench"},
            "spec": {
                "model": "bench",
                "engine": {"image": "vllm/vllm-openai"},
                "sloClasses": ["bench"],
                "scheduling": {"policy": policy.value},
            },
        }
    )
    args = engine_args(pool)
    if SCHEDULING_FLAG not in args:
        return "fcfs"
    value = args[args.index(SCHEDULING_FLAG) + 1]
    if value not in ("fcfs", "priority"):
        raise ValueError(f"the operator deploys {SCHEDULING_FLAG} {value!r}, which the simulator lacks")
    return "priority" if value == "priority" else "fcfs"


def policy_parameters(policy: SchedulingPolicyName, setup: EngineSetup, base: str) -> dict[str, Any]:
    """The policy's parameters for this run: the spec's, plus what the engine under it implies.

    SCORPIO's TPOT gate counts the batch as its virtual batch size only where the engine does credit-based
    batching; the simulated engine, like the vLLM the operator deploys, does none (only SCORPIO inside the
    engine, `scorpio-engine`, batches by credit), so the sidecar `scorpio` counts every running request."""
    parameters = dict(setup.policy_parameters.get(policy.value, {}))
    if policy is SchedulingPolicyName.SCORPIO:
        parameters.setdefault("credit_batching", base == ENGINE_SCORPIO)
    return parameters


def split_name(variant: str) -> tuple[str, bool]:
    """(base policy name, oracle?) of a variant name."""
    if variant.startswith(ORACLE_PREFIX):
        return variant[len(ORACLE_PREFIX) :], True
    return variant, False


def run_variant(
    variant: str,
    specs: Sequence[RequestSpec],
    classes: Sequence[SLOClassConfig],
    setup: EngineSetup,
    *,
    seed: int = 0,
    in_flight_cap: int | None = None,
    step_time: StepTimeModel | None = None,
) -> list[RequestRecord]:
    """Replay `specs` through the variant; one record per request, in arrival order. `step_time`
    replaces the profile's step-time model (the ssjf benchmark's linear job model)."""
    base, oracle = split_name(variant)
    profile = load_profile(setup.profile)
    step_time = step_time or profile.step_time()
    latency = setup.latency_model(step_time)
    passthrough = base in ("fcfs", V0_FCFS, ENGINE_SCORPIO)
    policy_name = "fcfs" if base in (ENGINE_SCORPIO, V0_FCFS) else base
    policy_enum = SchedulingPolicyName(policy_name)
    config = SidecarConfig(
        classes=list(classes),
        policy=PolicyConfig(name=policy_enum, parameters=policy_parameters(policy_enum, setup, base)),
    )
    predictor = load_default_predictor()
    policy = create_policy(config, predictor=predictor, latency=latency, seed=seed, oracle=oracle)
    scheduler: BatchScheduler | None = None
    if base == V0_FCFS:
        scheduler = VllmV0Scheduler(prefill_budget_tokens=setup.scorpio_prefill_budget_tokens)
    if base == ENGINE_SCORPIO:
        requests = {}
        for spec in specs:
            if oracle:
                if spec.true_output_tokens is None:
                    raise ValueError(f"oracle variant needs true_output_tokens ({spec.request_id})")
                predicted = float(spec.true_output_tokens)
            else:
                predicted = predictor.predict(
                    prompt_text=spec.prompt_text,
                    prompt_tokens=spec.prompt_tokens,
                    slo_class=spec.slo_class,
                    max_tokens=spec.max_tokens,
                ).mean_tokens
            requests[spec.request_id] = ScorpioRequest(spec.ttft_s, spec.tpot_s, predicted)
        scheduler = ScorpioEngineScheduler(
            requests, latency.copy(), prefill_budget_tokens=setup.scorpio_prefill_budget_tokens
        )
    # The engine runs as deployed beside the policy (pass-through variants: vLLM's default, fcfs).
    engine_policy = "fcfs" if passthrough else deployed_engine_scheduling(policy_enum)
    engine = Engine(setup.engine_config(seed, engine_policy), step_time, scheduler=scheduler)
    replica = SimulatedReplica(
        policy,
        engine,
        block_size=profile.block_size,
        in_flight_cap=in_flight_cap,
        kv_gating=not passthrough,
    )
    return run_replica(replica, specs)


def offered_window_s(arrivals_s: Iterable[float]) -> float:
    """The offered window of a run: its first arrival to its last arrival, over every class.

    It is fixed by the workload alone, so no policy can shorten it: a policy that rejects early, or
    serves fewer long requests to finish sooner, divides by the same window as every other policy. This
    is what a real client measures: the requests it met over the time it spent sending them.
    """
    times = list(arrivals_s)
    if not times:
        raise ValueError("no arrivals: an empty run has no offered window")
    if not all(math.isfinite(t) for t in times):
        raise ValueError("arrival times must be finite")
    return max(times) - min(times)


def goodput_rps(met: int, window_s: float) -> float:
    """Requests that met every SLO of their class per second of the offered window (`offered_window_s`).

    Undefined when every request arrived at one instant (a window of 0): such a run reports adherence
    only, and asking for its goodput is an error rather than a made-up number.
    """
    if met < 0:
        raise ValueError(f"met must be >= 0, got {met}")
    if not window_s > 0:
        raise ValueError(
            f"goodput needs an offered window > 0 s (got {window_s}): every request arrived at once; "
            "report adherence instead"
        )
    return met / window_s


@dataclass(frozen=True, slots=True)
class Score:
    """One run's figures. The single definition of goodput and adherence for every benchmark.

    - adherence: met / requests offered (rejected, failed and unfinished requests count as misses);
    - goodput_rps: met / the offered window (first to last arrival of the whole run, every class), never
      the time to the last finish, so rejecting early cannot raise it.
    """

    requests: int
    met: int
    rejected: int
    window_s: float  # the offered window of the whole run (every class): first to last arrival
    latency_sum_s: float  # over completed requests

    @property
    def adherence(self) -> float:
        return self.met / self.requests if self.requests else 0.0

    @property
    def goodput_rps(self) -> float:
        return goodput_rps(self.met, self.window_s)


def score(
    records: Sequence[RequestRecord], specs: Sequence[RequestSpec], slo_class: str | None = None
) -> Score:
    """Score a run: `specs` are the offered requests, `records` what became of them (one per spec).

    Goodput = requests meeting every SLO / offered window (first to last arrival of all the specs, every
    class, also for a per-class score); adherence = met / offered requests of the class. A spec without
    a record counts as a miss; a record of a request that was never offered is an error."""
    by_id = {spec.request_id: spec for spec in specs}
    unknown = [r.request_id for r in records if r.request_id not in by_id]
    if unknown:
        raise ValueError(f"records of requests that were not offered: {unknown[:5]}")
    if len({r.request_id for r in records}) != len(records):
        raise ValueError("more than one record for a request")
    chosen = [r for r in records if slo_class is None or r.slo_class == slo_class]
    return Score(
        requests=sum(1 for s in specs if slo_class is None or s.slo_class == slo_class),
        met=sum(r.met(by_id[r.request_id]) for r in chosen),
        rejected=sum(r.outcome is Outcome.REJECTED for r in chosen),
        window_s=offered_window_s(s.arrival_s for s in specs),
        latency_sum_s=sum(r.latency_s or 0.0 for r in chosen if r.outcome is Outcome.COMPLETED),
    )


def ratio(ours: float, theirs: float) -> float:
    """ours / theirs, inf when theirs is 0 and ours is not, 1 when both are 0."""
    if theirs == 0:
        return 1.0 if ours == 0 else math.inf
    return ours / theirs


def fmt_ratio(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.2f}x"
