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
Virtual time: results depend only on the inputs and seeds.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sloguard.api import SchedulingPolicyName
from sloguard.api.sidecar_config import PolicyConfig, SidecarConfig, SLOClassConfig
from sloguard.sidecar.core.latency import LatencyModel
from sloguard.sidecar.core.length_model import load_default_predictor
from sloguard.sidecar.core.registry import create_policy
from sloguard.sidecar.core.requests import Outcome, RequestSpec
from sloguard.sim.cosim import RequestRecord, SimulatedReplica, latency_model_from_profile, run_replica
from sloguard.sim.engine import BatchScheduler, Engine, EngineConfig, StepTimeModel
from sloguard.sim.engine.state import SchedulingPolicy
from sloguard.sim.profiles import load_profile
from sloguard.sim.scorpio_engine import ScorpioEngineScheduler, ScorpioRequest
from sloguard.sim.v0_scheduler import VllmV0Scheduler

ENGINE_SCORPIO = "scorpio-engine"
V0_FCFS = "fcfs-v0"
ORACLE_PREFIX = "oracle_"


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
    # Run the engine as the operator deploys it: `--scheduling-policy priority` for a policy that stamps
    # vLLM priorities (sloguard, edf), fcfs otherwise. False: fcfs for every policy.
    deployed_scheduling: bool = False

    def engine_config(self, seed: int, *, scheduling_policy: SchedulingPolicy = "fcfs") -> EngineConfig:
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
    config = SidecarConfig(
        classes=list(classes),
        policy=PolicyConfig(
            name=SchedulingPolicyName(policy_name), parameters=setup.policy_parameters.get(policy_name, {})
        ),
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
    scheduling: SchedulingPolicy = "fcfs"
    if setup.deployed_scheduling and SchedulingPolicyName(policy_name).stamps_engine_priority:
        scheduling = "priority"
    engine = Engine(setup.engine_config(seed, scheduling_policy=scheduling), step_time, scheduler=scheduler)
    replica = SimulatedReplica(
        policy,
        engine,
        block_size=profile.block_size,
        in_flight_cap=in_flight_cap,
        kv_gating=not passthrough,
    )
    return run_replica(replica, specs)


@dataclass(frozen=True, slots=True)
class Score:
    requests: int
    met: int
    rejected: int
    duration_s: float
    latency_sum_s: float  # over completed requests

    @property
    def adherence(self) -> float:
        return self.met / self.requests if self.requests else 0.0

    @property
    def goodput_rps(self) -> float:
        return self.met / self.duration_s if self.duration_s > 0 else 0.0


def score(
    records: Sequence[RequestRecord], specs: Sequence[RequestSpec], slo_class: str | None = None
) -> Score:
    """Goodput = requests meeting every SLO / the offered window (first to last arrival, over all
    classes), as a client measures it: no policy can raise it by rejecting early to shorten the tail.
    Adherence = met / requests; rejections count as misses."""
    by_id = {spec.request_id: spec for spec in specs}
    start = min((r.arrival_s for r in records), default=0.0)
    end = max((r.arrival_s for r in records), default=start)
    chosen = [r for r in records if slo_class is None or r.slo_class == slo_class]
    return Score(
        requests=len(chosen),
        met=sum(r.met(by_id[r.request_id]) for r in chosen),
        rejected=sum(r.outcome is Outcome.REJECTED for r in chosen),
        duration_s=end - start,
        latency_sum_s=sum(r.latency_s or 0.0 for r in chosen if r.outcome is Outcome.COMPLETED),
    )


def ratio(ours: float, theirs: float) -> float:
    """ours / theirs, inf when theirs is 0 and ours is not, 1 when both are 0."""
    if theirs == 0:
        return 1.0 if ours == 0 else math.inf
    return ours / theirs


def fmt_ratio(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.2f}x"
