"""Benchmark `scorpio`: SCORPIO's headline (goodput and SLO adherence over a QPS sweep), reproduced.

Set-up (reference/papers.md §1.6, §6.6), versioned in `SPEC`: Llama-3-8B on the A100 profile; ShareGPT first
turns (the predictor's test split) with SCORPIO's filter (prompt 4-1024, prompt + output <= 2048,
output >= 4), real reply lengths replayed exactly; the fallback SLO classes (500 ms, 50 ms), (3 s, 30 ms),
(15 s, 50 ms) drawn uniformly; Poisson arrivals (three seeds, figures are their mean); 512 requests per
point. Engine: no chunked prefill. vLLM (and the simulator) refuse `max-num-batched-tokens` 1024 <
`max-model-len` 2048 without chunked prefill, so the engine's budget is 2048; SCORPIO's and V0's own loops
keep the paper's 1024-token prefill budget.

Rates: multiples of the profile's measured capacity, the throughput of vLLM V1 fcfs when all the requests
of the point arrive at once (requests / makespan), from comfortable (0.5x) to heavy overload (3x).
Metrics (`bench.runner.score`): goodput = requests meeting both SLOs / the offered window (first to last
arrival, the same for every policy, so rejecting early cannot raise it); adherence = met / requests
(rejections are misses); per class too (per-class goodput divides by the whole run's window).
Called by `sloguard bench scorpio [--quick]`.
"""

import random
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sloguard.api.sidecar_config import SLOClassConfig
from sloguard.bench import BenchResult
from sloguard.bench.plots import lines
from sloguard.bench.runner import EngineSetup, fmt_ratio, ratio, run_variant, score
from sloguard.bench.workloads import poisson_arrivals, sample_rows
from sloguard.sidecar.core.requests import RequestSpec

CLASSES = (
    SLOClassConfig(name="ttft500ms-tpot50ms", ttft_s=0.5, tpot_s=0.05),
    SLOClassConfig(name="ttft3s-tpot30ms", ttft_s=3.0, tpot_s=0.03),
    SLOClassConfig(name="ttft15s-tpot50ms", ttft_s=15.0, tpot_s=0.05),
)
PAPER_POLICIES = ("fcfs", "fcfs-v0", "mooncake", "sjf", "scorpio-engine", "scorpio")
POLICIES = (
    *PAPER_POLICIES,
    "sloguard",
    "oracle_sjf",
    "oracle_scorpio-engine",
    "oracle_scorpio",
    "oracle_sloguard",
)


@dataclass(frozen=True)
class ScorpioSpec:
    version: int
    requests_per_point: int
    load_factors: tuple[float, ...]  # rates as multiples of the measured capacity
    workload_seed: int
    arrival_seeds: tuple[int, ...]  # one Poisson arrival sequence per seed; figures are their mean
    class_seed: int
    setup: EngineSetup


SPEC = ScorpioSpec(
    version=2,
    requests_per_point=512,
    load_factors=(0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
    workload_seed=1,
    arrival_seeds=(2, 3, 4),
    class_seed=3,
    setup=EngineSetup(
        profile="llama-3-8b-a100",
        max_num_batched_tokens=2048,
        max_model_len=2048,
        enable_chunked_prefill=False,
        scorpio_prefill_budget_tokens=1024,
    ),
)
# Quick: the same 512 requests per point, one arrival seed, three loads.
QUICK = ScorpioSpec(**{**SPEC.__dict__, "arrival_seeds": (2,), "load_factors": (0.5, 1.0, 3.0)})


def build_requests(spec: ScorpioSpec, arrivals: list[float]) -> list[RequestSpec]:
    rows = sample_rows(len(arrivals), spec.workload_seed)
    rng = random.Random(spec.class_seed)
    return [
        RequestSpec.from_class(
            rng.choice(CLASSES),
            request_id=f"r{i}",
            prompt_tokens=row.prompt_tokens,
            max_tokens=spec.setup.max_model_len - row.prompt_tokens,
            arrival_s=arrival,
            prompt_text=row.prompt_text,
            true_output_tokens=row.output_tokens,
        )
        for i, (row, arrival) in enumerate(zip(rows, arrivals, strict=True))
    ]


def measured_capacity_rps(spec: ScorpioSpec) -> float:
    """vLLM V1 fcfs throughput with every request of a point arriving at t = 0."""
    specs = build_requests(spec, [0.0] * spec.requests_per_point)
    records = run_variant("fcfs", specs, CLASSES, spec.setup)
    return len(specs) / max(r.finish_s or 0.0 for r in records)


def run_spec(spec: ScorpioSpec, policies: tuple[str, ...] = POLICIES) -> dict[str, Any]:
    capacity = measured_capacity_rps(spec)
    points = []
    for factor in spec.load_factors:
        rate = round(capacity * factor, 2)
        workloads = [
            build_requests(spec, poisson_arrivals(spec.requests_per_point, rate, seed))
            for seed in spec.arrival_seeds
        ]
        results: dict[str, dict[str, Any]] = {}
        for name in policies:
            runs = [(run_variant(name, specs, CLASSES, spec.setup), specs) for specs in workloads]
            totals = [score(records, specs) for records, specs in runs]
            results[name] = {
                "goodput_rps": round(_mean(t.goodput_rps for t in totals), 4),
                "adherence": round(_mean(t.adherence for t in totals), 4),
                "rejected": round(_mean(t.rejected for t in totals), 2),
                "per_class": {
                    c.name: {
                        "goodput_rps": round(_mean(score(r, s, c.name).goodput_rps for r, s in runs), 4),
                        "adherence": round(_mean(score(r, s, c.name).adherence for r, s in runs), 4),
                    }
                    for c in CLASSES
                },
            }
        points.append({"rate_rps": rate, "load_factor": factor, "policies": results})
    return {
        "spec_version": spec.version,
        "profile": spec.setup.profile,
        "capacity_rps": round(capacity, 3),
        "requests_per_point": spec.requests_per_point,
        "arrival_seeds": list(spec.arrival_seeds),
        "points": points,
    }


def _mean(values: Iterable[float]) -> float:
    return statistics.fmean(values)


def best_paper(point: dict[str, Any], metric: str) -> tuple[str, float]:
    pols = point["policies"]
    name = max((p for p in PAPER_POLICIES if p in pols), key=lambda p: pols[p][metric])
    return name, float(pols[name][metric])


def markdown(data: dict[str, Any]) -> str:
    out = [
        f"### scorpio (spec v{data['spec_version']}, {data['profile']}, "
        f"{data['requests_per_point']} requests per point, capacity {data['capacity_rps']} req/s, "
        f"mean over arrival seeds {', '.join(map(str, data['arrival_seeds']))})",
        "",
        "Goodput (req/s meeting both SLOs) / adherence per policy; ratios are sloguard's goodput over the"
        " named policy's.",
        "",
    ]
    names = list(data["points"][0]["policies"])
    versus = [n for n in ("fcfs", "fcfs-v0", "scorpio-engine") if n in names]
    out.append(
        "| rate (req/s) | load | "
        + " | ".join(names)
        + " | best paper policy | vs best | "
        + " | ".join(f"vs {n}" for n in versus)
        + " |"
    )
    out.append("|" + "---|" * (len(names) + 4 + len(versus)))
    for point in data["points"]:
        pols = point["policies"]
        cells = [f"{pols[n]['goodput_rps']:.2f} / {pols[n]['adherence']:.2f}" for n in names]
        ours = pols["sloguard"]["goodput_rps"] if "sloguard" in pols else 0.0
        best_name, best = best_paper(point, "goodput_rps")
        ratios = [fmt_ratio(ratio(ours, pols[n]["goodput_rps"])) for n in versus]
        out.append(
            f"| {point['rate_rps']} | {point['load_factor']}x | "
            + " | ".join(cells)
            + f" | {best_name} | {fmt_ratio(ratio(ours, best))} | "
            + " | ".join(ratios)
            + " |"
        )
    out += ["", "Adherence per class at the heaviest point:", ""]
    heavy = data["points"][-1]["policies"]
    classes = list(heavy[names[0]]["per_class"])
    out.append("| policy | " + " | ".join(classes) + " | rejected |")
    out.append("|" + "---|" * (len(classes) + 2))
    for name in names:
        per_class = " | ".join(f"{heavy[name]['per_class'][c]['adherence']:.2f}" for c in classes)
        out.append(f"| {name} | {per_class} | {heavy[name]['rejected']} |")
    return "\n".join(out) + "\n"


def plot(data: dict[str, Any]) -> bytes:
    rates = [p["rate_rps"] for p in data["points"]]
    names = list(data["points"][0]["policies"])
    return lines(
        rates,
        {n: [p["policies"][n]["goodput_rps"] for p in data["points"]] for n in names},
        title=f"scorpio: goodput vs offered load ({data['profile']})",
        xlabel="offered load (req/s)",
        ylabel="goodput (req/s meeting both SLOs)",
    )


def run(quick: bool) -> BenchResult:
    data = run_spec(QUICK if quick else SPEC)
    return BenchResult(data=data, markdown=markdown(data), files={"scorpio.png": plot(data)})
