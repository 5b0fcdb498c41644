"""Benchmark `ssjf`: SSJF's headline (mean JCT of speculative SJF vs FCFS), on its own job model and on ours.

Set-up (reference/papers.md §3.2, §6.6), versioned in `SPEC`:
- `paper-sim`: the authors' simulator's job model expressed as an engine step-time model: a request costs
  0.1 s when it starts (its prefill iteration) plus 0.02 s per output token, so a job alone takes
  0.1 + 0.02 x tokens; at most 4 jobs run at once (max batch 4, continuous batching). Poisson arrivals at
  1 to 10 req/s, 50 jobs per run, 20 runs per rate (seeds 0..19).
- `calibrated`: the same workloads on the Llama-3-8B A100 profile with `--max-num-seqs 4` (the paper's
  "live-engine version").
Jobs are ShareGPT first turns from the predictor's test split with their real reply length (1 < length
< 512 tokens, as the paper's filter), replayed exactly; SJF orders by our predictor (`oracle_sjf`: by the
true length). Every sidecar policy holds the queue (in-flight cap 4); `fcfs` is the engine's own FIFO.
sloguard runs with one SLO class of TTFT 1 h, TPOT 10 s, so nothing is rejected and JCT is comparable.
Metric: mean JCT (arrival to last token) over all jobs of all runs and rates, with adherence beside it (met /
jobs, `bench.runner.score`), which shows that no policy shortened its JCT by rejecting.
"""

import random
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from sloguard.api.sidecar_config import SLOClassConfig
from sloguard.bench import BenchResult
from sloguard.bench.plots import bars
from sloguard.bench.runner import EngineSetup, run_variant, score
from sloguard.bench.workloads import PromptRow, poisson_arrivals, sharegpt_test_rows
from sloguard.sidecar.core.requests import RequestSpec
from sloguard.sim.engine import BatchShape

CLASSES = (SLOClassConfig(name="jobs", ttft_s=3600.0, tpot_s=10.0),)
POLICIES = ("fcfs", "sjf", "oracle_sjf", "sloguard")
JOB_START_S = 0.1
JOB_PER_TOKEN_S = 0.02


class LinearJobStepTime:
    """SSJF's simulator as a step-time model: 0.02 s per iteration plus 0.1 s per request starting."""

    def step_s(self, batch: BatchShape) -> float:
        return JOB_PER_TOKEN_S + JOB_START_S * len(batch.prefill_chunks)

    def decode_run_s(
        self, decode_seqs: int, decode_kv_tokens: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float64]:
        return np.full(len(decode_kv_tokens), JOB_PER_TOKEN_S, dtype=np.float64)


@dataclass(frozen=True)
class SsjfSpec:
    version: int
    rates_rps: tuple[float, ...]
    jobs_per_run: int
    runs: int
    max_batch: int
    workload_seed: int


SPEC = SsjfSpec(
    version=1,
    rates_rps=tuple(float(r) for r in range(1, 11)),
    jobs_per_run=50,
    runs=20,
    max_batch=4,
    workload_seed=11,
)
QUICK = replace(SPEC, rates_rps=(2.0, 6.0, 10.0), runs=3)
CALIBRATED = EngineSetup(profile="llama-3-8b-a100", max_num_seqs=4)


def _pool() -> list[PromptRow]:
    return [r for r in sharegpt_test_rows() if 1 < r.output_tokens < 512 and r.prompt_tokens <= 4096]


def build_jobs(spec: SsjfSpec, rate: float, run: int) -> list[RequestSpec]:
    rng = random.Random(f"{spec.workload_seed}:{rate}:{run}")
    rows = rng.sample(_pool(), spec.jobs_per_run)
    arrivals = poisson_arrivals(spec.jobs_per_run, rate, seed=rng.randrange(1 << 30))
    return [
        RequestSpec.from_class(
            CLASSES[0],
            request_id=f"j{i}",
            prompt_tokens=max(1, row.prompt_tokens),
            max_tokens=4096,
            arrival_s=arrival,
            prompt_text=row.prompt_text,
            true_output_tokens=row.output_tokens,
        )
        for i, (row, arrival) in enumerate(zip(rows, arrivals, strict=True))
    ]


def _mean_jct(spec: SsjfSpec, setup: EngineSetup, *, linear: bool) -> dict[str, Any]:
    per_rate: dict[str, dict[str, float]] = {name: {} for name in POLICIES}
    totals: dict[str, list[float]] = {name: [] for name in POLICIES}
    met = dict.fromkeys(POLICIES, 0)
    offered = dict.fromkeys(POLICIES, 0)
    for rate in spec.rates_rps:
        for name in POLICIES:
            jcts: list[float] = []
            for run in range(spec.runs):
                jobs = build_jobs(spec, rate, run)
                records = run_variant(
                    name,
                    jobs,
                    CLASSES,
                    setup,
                    seed=run,
                    in_flight_cap=spec.max_batch,
                    step_time=LinearJobStepTime() if linear else None,
                )
                jcts += [r.latency_s for r in records if r.latency_s is not None]
                figures = score(records, jobs)
                met[name] += figures.met
                offered[name] += figures.requests
            per_rate[name][str(rate)] = round(sum(jcts) / len(jcts), 4)
            totals[name] += jcts
    return {
        "policies": {
            name: {"mean_jct_s": round(sum(v) / len(v), 4), "adherence": round(met[name] / offered[name], 4)}
            for name, v in totals.items()
        },
        "per_rate_mean_jct_s": per_rate,
    }


def run_spec(spec: SsjfSpec) -> dict[str, Any]:
    paper = replace(CALIBRATED, max_num_seqs=spec.max_batch)
    return {
        "spec_version": spec.version,
        **_mean_jct(spec, paper, linear=True),
        "calibrated": {"profile": CALIBRATED.profile, **_mean_jct(spec, paper, linear=False)},
    }


def markdown(data: dict[str, Any]) -> str:
    out = [
        f"### ssjf (spec v{data['spec_version']}): mean JCT, max batch 4",
        "",
        "mean JCT / adherence (met / jobs, `bench.runner.score`: a rejected job would count as a miss, not"
        " as a short JCT).",
        "",
    ]
    out.append(
        "| engine | fcfs (baseline) | sjf | oracle_sjf | sloguard "
        "| sjf / fcfs | oracle_sjf / fcfs | sloguard / fcfs |"
    )
    out.append("|---|---|---|---|---|---|---|---|")
    for label, block in (
        ("paper's job model", data),
        (f"calibrated ({data['calibrated']['profile']})", data["calibrated"]),
    ):
        p = block["policies"]
        base = p["fcfs"]["mean_jct_s"]
        cell = {n: f"{p[n]['mean_jct_s']:.2f} s / {p[n]['adherence']:.2f}" for n in POLICIES}
        out.append(
            f"| {label} | {cell['fcfs']} | {cell['sjf']} | {cell['oracle_sjf']} | {cell['sloguard']} "
            f"| {p['sjf']['mean_jct_s'] / base:.2f}x | "
            f"{p['oracle_sjf']['mean_jct_s'] / base:.2f}x | {p['sloguard']['mean_jct_s'] / base:.2f}x |"
        )
    return "\n".join(out) + "\n"


def run(quick: bool) -> BenchResult:
    data = run_spec(QUICK if quick else SPEC)
    png = bars(
        ["paper's job model", "calibrated engine"],
        {
            n: [data["policies"][n]["mean_jct_s"], data["calibrated"]["policies"][n]["mean_jct_s"]]
            for n in POLICIES
        },
        title="ssjf: mean JCT (max batch 4)",
        ylabel="mean JCT (s)",
    )
    return BenchResult(data=data, markdown=markdown(data), files={"ssjf.png": png})
