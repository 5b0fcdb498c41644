"""Benchmark `sa`: the SA scheduler's headline (SLO attainment with a batch of mixed requests), reproduced.

Set-up (reference/papers.md §4.3, §6.6), versioned in `SPEC`: 40 requests arriving at once, half chat
(ShareGPT first turns from the predictor's test split, real reply lengths; SLO TTFT 10 s, TPOT 50 ms) and
half code (Azure 2023 code-trace requests, real token counts, no text; SLO end-to-end 30 s), drawn and
shuffled by a seed (ten seeds, ten workloads; figures are their means, per-seed attainment kept), on the
Llama-3-8B A100 profile with the engine's batch cap (`--max-num-seqs`) at 1 (the paper's headline case)
and larger; every sidecar policy holds the queue at the same cap. Metrics: attainment (met / 40,
rejections are misses, `bench.runner.score`; with every request arriving at once there is no offered
window, so no goodput), mean latency of completed requests, G = met / sum of latencies (completed).
`sa` runs at full strength: planning the whole queue with the iteration budget where its convergence
curve (attainment against iterations, also in the output) flattens.
Called by `sloguard bench sa [--quick]`.
"""

import random
import statistics
from dataclasses import dataclass, replace
from typing import Any

from sloguard.api.sidecar_config import SLOClassConfig
from sloguard.bench import BenchResult
from sloguard.bench.plots import bars, lines
from sloguard.bench.runner import EngineSetup, run_variant, score
from sloguard.bench.workloads import azure_code_trace, sharegpt_test_rows
from sloguard.sidecar.core.policies.sa import SaParameters
from sloguard.sidecar.core.requests import RequestSpec

CHAT = SLOClassConfig(name="chat", ttft_s=10.0, tpot_s=0.05)
CODE = SLOClassConfig(name="code", ttft_s=30.0, tpot_s=30.0, deadline_s=30.0)
CLASSES = (CHAT, CODE)
POLICIES = ("fcfs", "edf", "sa", "sloguard", "oracle_sa", "oracle_sloguard")
PAPER_POLICIES = ("fcfs", "sa")


CONVERGENCE_POLICIES = ("sa",)


@dataclass(frozen=True)
class SaSpec:
    version: int
    requests: int
    max_batches: tuple[int, ...]
    seeds: tuple[int, ...]  # one workload per seed; 40 requests are few, one draw decides by a request or two
    setup: EngineSetup
    # the convergence curve: sa's attainment against its iteration budget, at these batch caps
    convergence_iterations: tuple[int, ...]
    convergence_batches: tuple[int, ...]


SPEC = SaSpec(
    version=3,
    requests=40,
    max_batches=(1, 4, 16),
    seeds=tuple(range(5, 15)),
    setup=EngineSetup(profile="llama-3-8b-a100"),
    convergence_iterations=(0, 30, 100, 300, 1000, 3000),
    convergence_batches=(1, 4),
)
QUICK = replace(SPEC, max_batches=(1, 4), convergence_iterations=(0, 100, 1000), convergence_batches=(1,))


def build_requests(spec: SaSpec, seed: int) -> list[RequestSpec]:
    rng = random.Random(seed)
    chat_pool = [
        r for r in sharegpt_test_rows() if 4 <= r.prompt_tokens <= 2048 and 4 <= r.output_tokens <= 2048
    ]
    code_pool = [
        r for r in azure_code_trace() if r.prompt_tokens + r.output_tokens <= 8000 and r.output_tokens >= 2
    ]
    half = spec.requests // 2
    out: list[RequestSpec] = []
    for i, row in enumerate(rng.sample(chat_pool, half)):
        out.append(
            RequestSpec.from_class(
                CHAT,
                request_id=f"chat{i}",
                prompt_tokens=row.prompt_tokens,
                max_tokens=2048,
                arrival_s=0.0,
                prompt_text=row.prompt_text,
                true_output_tokens=row.output_tokens,
            )
        )
    for i, trace_row in enumerate(rng.sample(code_pool, spec.requests - half)):
        out.append(
            RequestSpec.from_class(
                CODE,
                request_id=f"code{i}",
                prompt_tokens=trace_row.prompt_tokens,
                max_tokens=2048,
                arrival_s=0.0,
                true_output_tokens=trace_row.output_tokens,
            )
        )
    rng.shuffle(out)
    return out


def run_spec(spec: SaSpec) -> dict[str, Any]:
    workloads = [(seed, build_requests(spec, seed)) for seed in spec.seeds]
    cases = []
    for max_batch in spec.max_batches:
        setup = replace(spec.setup, max_num_seqs=max_batch)
        results = {}
        for name in POLICIES:
            per_seed = []
            for seed, specs in workloads:
                records = run_variant(name, specs, CLASSES, setup, seed=seed, in_flight_cap=max_batch)
                per_seed.append(score(records, specs))
            latencies = [
                t.latency_sum_s / (t.requests - t.rejected) for t in per_seed if t.requests > t.rejected
            ]
            results[name] = {
                "attainment": round(statistics.fmean(t.adherence for t in per_seed), 4),
                "attainment_per_seed": [round(t.adherence, 4) for t in per_seed],
                "mean_latency_s": round(statistics.fmean(latencies), 4) if latencies else None,
                "G": round(
                    statistics.fmean(
                        t.met / t.latency_sum_s if t.latency_sum_s > 0 else 0.0 for t in per_seed
                    ),
                    5,
                ),
                "rejected": round(statistics.fmean(t.rejected for t in per_seed), 2),
            }
        cases.append({"max_batch": max_batch, "policies": results})
    return {
        "spec_version": spec.version,
        "profile": spec.setup.profile,
        "requests": spec.requests,
        "seeds": list(spec.seeds),
        "sa_iterations": SaParameters().iterations,
        "cases": cases,
        "convergence": convergence(spec, workloads),
    }


def convergence(spec: SaSpec, workloads: list[tuple[int, list[RequestSpec]]]) -> list[dict[str, Any]]:
    """sa's mean attainment over the seeds for each iteration budget: where it flattens
    is the budget at which the baseline runs at full strength (`SaParameters.iterations`)."""
    curves = []
    for max_batch in spec.convergence_batches:
        for name in CONVERGENCE_POLICIES:
            attainment = []
            for iterations in spec.convergence_iterations:
                setup = replace(
                    spec.setup, max_num_seqs=max_batch, policy_parameters={"sa": {"iterations": iterations}}
                )
                per_seed = [
                    score(
                        run_variant(name, specs, CLASSES, setup, seed=seed, in_flight_cap=max_batch), specs
                    ).adherence
                    for seed, specs in workloads
                ]
                attainment.append(round(statistics.fmean(per_seed), 4))
            curves.append(
                {
                    "max_batch": max_batch,
                    "policy": name,
                    "iterations": list(spec.convergence_iterations),
                    "attainment": attainment,
                }
            )
    return curves


def wins(case: dict[str, Any], ours: str, theirs: str) -> int:
    """Seeds on which `ours` met at least as many requests as `theirs`."""
    pairs = zip(
        case["policies"][ours]["attainment_per_seed"],
        case["policies"][theirs]["attainment_per_seed"],
        strict=True,
    )
    return sum(a >= b for a, b in pairs)


def markdown(data: dict[str, Any]) -> str:
    out = [
        f"### sa (spec v{data['spec_version']}, {data['profile']}, {data['requests']} requests at once, "
        f"mean over {len(data['seeds'])} workload seeds)",
        "",
        "attainment / mean latency (s) / G (met per second of summed latency), means over the seeds; ratios"
        " are sloguard's; `>= on` counts the seeds where sloguard met at least as many.",
        "",
    ]
    names = list(data["cases"][0]["policies"])
    out.append(
        "| max batch | "
        + " | ".join(names)
        + " | sloguard / sa attainment | sloguard / fcfs attainment | >= sa on | >= fcfs on |"
    )
    out.append("|" + "---|" * (len(names) + 5))
    for case in data["cases"]:
        p = case["policies"]
        cells = []
        for n in names:
            latency = p[n]["mean_latency_s"]
            cells.append(
                f"{p[n]['attainment']:.2f} / {'-' if latency is None else round(latency, 1)}"
                f" / {p[n]['G']:.4f}"
            )

        def rel(a: float, b: float) -> str:
            return "∞" if b == 0 and a > 0 else ("1.00x" if b == 0 else f"{a / b:.2f}x")

        out.append(
            f"| {case['max_batch']} | "
            + " | ".join(cells)
            + f" | {rel(p['sloguard']['attainment'], p['sa']['attainment'])}"
            + f" | {rel(p['sloguard']['attainment'], p['fcfs']['attainment'])}"
            + f" | {wins(case, 'sloguard', 'sa')}/{len(data['seeds'])}"
            + f" | {wins(case, 'sloguard', 'fcfs')}/{len(data['seeds'])} |"
        )
    budgets = data["convergence"][0]["iterations"]
    out += [
        "",
        "Convergence: sa's attainment (mean over the seeds) against its iteration budget; the policy plans"
        f" the whole queue and runs {data['sa_iterations']} iterations per plan (the table above).",
        "",
        "| max batch | policy | " + " | ".join(str(b) for b in budgets) + " |",
        "|" + "---|" * (len(budgets) + 2),
    ]
    for curve in data["convergence"]:
        curve_cells = " | ".join(f"{a:.3f}" for a in curve["attainment"])
        out.append(f"| {curve['max_batch']} | {curve['policy']} | {curve_cells} |")
    return "\n".join(out) + "\n"


def convergence_plot(data: dict[str, Any]) -> bytes:
    budgets = [max(1, b) for b in data["convergence"][0]["iterations"]]  # 0 iterations drawn at 1
    return lines(
        budgets,
        {f"{c['policy']} (max batch {c['max_batch']})": c["attainment"] for c in data["convergence"]},
        title="sa: attainment vs annealing iterations per plan (0 drawn at 1)",
        xlabel="iterations per plan",
        ylabel="attainment",
        highlight="",
        log_x=True,
    )


def run(quick: bool) -> BenchResult:
    data = run_spec(QUICK if quick else SPEC)
    png = bars(
        [f"max batch {c['max_batch']}" for c in data["cases"]],
        {n: [c["policies"][n]["attainment"] for c in data["cases"]] for n in data["cases"][0]["policies"]},
        title=f"sa: SLO attainment, 40 requests at once (mean of {len(data['seeds'])} workloads)",
        ylabel="attainment",
    )
    files = {"sa.png": png, "sa-convergence.png": convergence_plot(data)}
    return BenchResult(data=data, markdown=markdown(data), files=files)
