"""The workload matrix's generator: one seeded random draw of every dimension a scheduling point has.

Called by `sloguard.bench.matrix` (the `matrix` benchmark). `draw_point(seed)` picks a point's parameters
(`PointParams`, plain data, JSON-able); `build_point(params)` turns them into the engine set-up, the SLO
classes and the requests. Every dimension is a random draw from the seed alone:

- engine: every profile in sim/profiles, as shipped, slowed (every step `SLOW_FACTOR` x as long), KV-starved
  (`KV_STARVED_BLOCKS` blocks instead of the profile's) or both; chunked prefill on (2048-token budget) or
  off (8192, the context); the engine's scheduling policy as the operator deploys it per policy
  (`bench.runner.deployed_engine_scheduling`);
- SLO classes: 2-8, TTFT and TPOT targets log-uniform around the engine's single-request latencies for the
  point's median request (prefill of the median prompt; inter-token time of one request at the median
  context), random weights (the share of requests) and priorities 0-3;
- arrivals: Poisson, Gamma with CV 2 or 4, or a random window of the Azure 2023 conversation or code trace
  or of the Mooncake conversation trace (its timestamps lie on a ~3 s grid, so each request is spread
  uniformly within its 3 s slot), time-scaled to the point's rate;
- lengths: ShareGPT first turns (the predictor's test split, with the prompt text), Azure conversation or
  code, or Mooncake (token counts and each request's prefix-block `hash_ids`, which the requests carry to
  the engine's prefix caching: on, vLLM's default, in every point; only Mooncake-length requests carry
  prefix information, `PointParams.prefix_caching`); requests longer than the context are skipped;
- load: log-uniform 0.25x-3x of the capacity measured on that engine with those requests (vLLM fcfs, all of
  them arriving at once: requests / makespan); the caller measures it (`sloguard.bench.matrix`).

Ranges here are the issue's; nothing was fit to results. Pure apart from reading shared/data (cached).
"""

import functools
import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from sloguard.api.sidecar_config import SLOClassConfig
from sloguard.bench.runner import EngineSetup
from sloguard.bench.workloads import (
    MOONCAKE_BLOCK_TOKENS,
    azure_code_trace,
    azure_conv_trace,
    data_dir,
    sharegpt_test_rows,
)
from sloguard.sidecar.core.requests import RequestSpec
from sloguard.sim.engine import ScaledStepTime, StepTimeModel
from sloguard.sim.profiles import available_profiles, load_profile

MOONCAKE_CONV_FILE = "mooncake_fast25/conversation_trace.jsonl"
MOONCAKE_SLOT_S = 3.0  # the Mooncake conversation trace's timestamp grid (shared/data/README.md §2)
MAX_MODEL_LEN = 8192
CHUNKED_BUDGET_TOKENS = 2048
SLOW_FACTOR = 2.5  # the slowed engine
KV_STARVED_BLOCKS = 6000  # the KV-starved engine (the profiles ship 27,157)
ENGINE_VARIANTS = ("as-shipped", "slow", "kv-starved", "slow-kv-starved")
ARRIVALS = ("poisson", "gamma-cv2", "gamma-cv4", "azure-conv", "azure-code", "mooncake")
LENGTHS = ("sharegpt", "azure-conv", "azure-code", "mooncake")
CLASS_COUNT = (2, 8)
TTFT_FACTOR = (2.0, 60.0)  # x the single-request prefill of the median prompt, log-uniform
TPOT_FACTOR = (1.2, 4.0)  # x the single-request inter-token time at the median context, log-uniform
LOAD_FACTOR = (0.25, 3.0)  # x the measured capacity, log-uniform
PRIORITIES = (0, 3)


@dataclass(frozen=True, slots=True)
class ClassDraw:
    name: str
    ttft_s: float
    tpot_s: float
    weight: float
    priority: int


@dataclass(frozen=True, slots=True)
class PointParams:
    """One point of the matrix, everything drawn from `seed`; `classes` and `load_factor` are absolute
    once `build_point` has priced them (the draw stores the factors)."""

    seed: int
    requests: int
    profile: str
    engine_variant: str
    step_time_factor: float
    num_gpu_blocks: int | None
    chunked_prefill: bool
    arrivals: str
    lengths: str
    class_count: int
    ttft_factors: tuple[float, ...]
    tpot_factors: tuple[float, ...]
    weights: tuple[float, ...]
    priorities: tuple[int, ...]
    load_factor: float
    # the requests carry prefix-block hashes (Mooncake's hash_ids) to the engine's prefix cache; derived
    # from `lengths`, not drawn
    prefix_caching: bool = False

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LengthRow:
    prompt_tokens: int
    output_tokens: int
    prompt_text: str | None = None
    hash_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Point:
    """A built point: engine, classes, step-time model and the requests (arrival times still unset: the
    rate needs the measured capacity, see `with_arrivals`)."""

    params: PointParams
    setup: EngineSetup
    step_time: StepTimeModel
    classes: tuple[SLOClassConfig, ...]
    rows: tuple[LengthRow, ...]
    class_of: tuple[int, ...]  # per row, an index into classes

    def requests_at(self, arrivals_s: Sequence[float]) -> list[RequestSpec]:
        if len(arrivals_s) != len(self.rows):
            raise ValueError(f"{len(arrivals_s)} arrival times for {len(self.rows)} requests")
        return [
            RequestSpec.from_class(
                self.classes[c],
                request_id=f"m{self.params.seed}-{i}",
                prompt_tokens=row.prompt_tokens,
                max_tokens=MAX_MODEL_LEN - row.prompt_tokens,
                arrival_s=t,
                prompt_text=row.prompt_text,
                true_output_tokens=row.output_tokens,
                prefix_hashes=row.hash_ids if self.params.prefix_caching else None,
                prefix_block_tokens=MOONCAKE_BLOCK_TOKENS if self.params.prefix_caching else 0,
            )
            for i, (row, c, t) in enumerate(zip(self.rows, self.class_of, arrivals_s, strict=True))
        ]


def _log_uniform(rng: random.Random, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def draw_point(seed: int, requests: int) -> PointParams:
    """The point of `seed`: every dimension drawn independently from one seeded generator."""
    if requests < 2:
        raise ValueError(f"a point needs at least 2 requests, got {requests}")
    rng = random.Random(f"matrix-point-{seed}")
    profile = rng.choice(available_profiles())
    variant = rng.choice(ENGINE_VARIANTS)
    count = rng.randint(*CLASS_COUNT)
    params = PointParams(
        seed=seed,
        requests=requests,
        profile=profile,
        engine_variant=variant,
        step_time_factor=SLOW_FACTOR if variant.startswith("slow") else 1.0,
        num_gpu_blocks=KV_STARVED_BLOCKS if variant.endswith("kv-starved") else None,
        chunked_prefill=rng.random() < 0.5,
        arrivals=rng.choice(ARRIVALS),
        lengths=rng.choice(LENGTHS),
        class_count=count,
        ttft_factors=tuple(round(_log_uniform(rng, TTFT_FACTOR), 4) for _ in range(count)),
        tpot_factors=tuple(round(_log_uniform(rng, TPOT_FACTOR), 4) for _ in range(count)),
        weights=tuple(round(rng.uniform(0.1, 1.0), 4) for _ in range(count)),
        priorities=tuple(rng.randint(*PRIORITIES) for _ in range(count)),
        load_factor=round(_log_uniform(rng, LOAD_FACTOR), 4),
    )
    return replace(params, prefix_caching=params.lengths == "mooncake")


@functools.cache
def mooncake_conv_trace() -> tuple[tuple[float, int, int, tuple[int, ...]], ...]:
    """(arrival s, input tokens, output tokens, prefix-block hashes) of the Mooncake conversation trace."""
    path = data_dir() / MOONCAKE_CONV_FILE
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            rows.append(
                (
                    float(record["timestamp"]) / 1000.0,
                    int(record["input_length"]),
                    int(record["output_length"]),
                    tuple(int(h) for h in record["hash_ids"]),
                )
            )
    if not rows:
        raise ValueError(f"{path} holds no requests")
    return tuple(rows)


@functools.cache
def length_pool(source: str) -> tuple[LengthRow, ...]:
    """Every usable row of a length source: prompt >= 1, output >= 1, prompt + output within the context."""
    rows: list[LengthRow]
    if source == "sharegpt":
        rows = [LengthRow(r.prompt_tokens, r.output_tokens, r.prompt_text) for r in sharegpt_test_rows()]
    elif source == "azure-conv":
        rows = [LengthRow(r.prompt_tokens, r.output_tokens) for r in azure_conv_trace()]
    elif source == "azure-code":
        rows = [LengthRow(r.prompt_tokens, r.output_tokens) for r in azure_code_trace()]
    elif source == "mooncake":
        rows = [LengthRow(p, o, None, h) for _, p, o, h in mooncake_conv_trace()]
    else:
        raise ValueError(f"unknown length source {source!r}; known: {', '.join(LENGTHS)}")
    return tuple(
        r
        for r in rows
        if r.prompt_tokens >= 1
        and r.output_tokens >= 1
        and r.prompt_tokens + r.output_tokens <= MAX_MODEL_LEN
    )


def _trace_times(source: str) -> tuple[float, ...]:
    if source == "azure-conv":
        return tuple(r.arrival_s for r in azure_conv_trace())
    if source == "azure-code":
        return tuple(r.arrival_s for r in azure_code_trace())
    if source == "mooncake":
        return tuple(t for t, _, _, _ in mooncake_conv_trace())
    raise ValueError(f"not a trace: {source!r}")


def arrival_times(kind: str, count: int, rate_rps: float, seed: int) -> list[float]:
    """`count` arrival times with mean rate `rate_rps` (the span from first to last is (count - 1) / rate
    for traces, in expectation for the renewal processes), starting at 0."""
    if rate_rps <= 0 or not math.isfinite(rate_rps):
        raise ValueError(f"rate must be a finite number > 0, got {rate_rps!r}")
    rng = random.Random(f"matrix-arrivals-{seed}")
    if kind in ("poisson", "gamma-cv2", "gamma-cv4"):
        cv = {"poisson": 1.0, "gamma-cv2": 2.0, "gamma-cv4": 4.0}[kind]
        shape = 1.0 / (cv * cv)
        t, out = 0.0, []
        for _ in range(count):
            out.append(t)
            t += rng.gammavariate(shape, 1.0 / (rate_rps * shape))
        return out
    if kind not in ("azure-conv", "azure-code", "mooncake"):
        raise ValueError(f"unknown arrival process {kind!r}; known: {', '.join(ARRIVALS)}")
    times = _trace_times(kind)
    if len(times) < count:
        raise ValueError(f"the {kind} trace has {len(times)} requests, fewer than {count}")
    start = rng.randrange(0, len(times) - count + 1)
    window = list(times[start : start + count])
    if kind == "mooncake":  # undo the ~3 s timestamp grid: spread each request within its slot
        window = sorted(t + rng.uniform(0.0, MOONCAKE_SLOT_S) for t in window)
    first = window[0]
    span = window[-1] - first
    scale = (count - 1) / rate_rps / span if span > 0 else 0.0
    return [(t - first) * scale for t in window]


def build_point(params: PointParams) -> Point:
    """The engine set-up, the classes priced against that engine and the requests of a drawn point."""
    rng = random.Random(f"matrix-requests-{params.seed}")
    profile = load_profile(params.profile)
    setup = EngineSetup(
        profile=params.profile,
        max_num_batched_tokens=CHUNKED_BUDGET_TOKENS if params.chunked_prefill else MAX_MODEL_LEN,
        max_model_len=MAX_MODEL_LEN,
        enable_chunked_prefill=params.chunked_prefill,
        num_gpu_blocks=params.num_gpu_blocks,
    )
    base = profile.step_time()
    step_time: StepTimeModel = (
        base if params.step_time_factor == 1.0 else ScaledStepTime(base, params.step_time_factor)
    )
    pool = length_pool(params.lengths)
    rows = tuple(rng.choice(pool) for _ in range(params.requests))
    latency = setup.latency_model(step_time)
    prompts = sorted(r.prompt_tokens for r in rows)
    outputs = sorted(r.output_tokens for r in rows)
    median_prompt = float(prompts[len(prompts) // 2])
    median_output = float(outputs[len(outputs) // 2])
    alone_ttft_s = latency.prefill_s(median_prompt)
    alone_itl_s = latency.itl_s(1.0, median_prompt + median_output / 2)
    classes = tuple(
        SLOClassConfig(
            name=f"c{i}",
            ttft_s=round(alone_ttft_s * params.ttft_factors[i], 4),
            tpot_s=round(alone_itl_s * params.tpot_factors[i], 5),
            priority=params.priorities[i],
        )
        for i in range(params.class_count)
    )
    class_of = tuple(rng.choices(range(params.class_count), weights=params.weights, k=params.requests))
    return Point(params, setup, step_time, classes, rows, class_of)
