"""Benchmark `sa`: the SA scheduler's headline (SLO attainment with a batch of mixed requests), reproduced.

Set-up (reference/papers.md §4.3, §6.6), versioned in `SPEC`: 40 requests arriving at once, half chat
(ShareGPT first turns from the predictor's test split, real reply lengths; SLO TTFT 10 s, TPOT 50 ms) and
half code (Azure 2023 code-trace requests, real token counts, no text; SLO end-to-end 30 s), shuffled
with a fixed seed, on the Llama-3-8B A100 profile with the engine's batch cap (`--max-num-seqs`) at 1 (the
paper's headline case) and larger; every sidecar policy holds the queue at the same cap. Metrics:
attainment (met / 40, rejections are misses), mean latency of completed requests, G = met / sum of
latencies (completed). Called by `sloguard bench sa [--quick]`.
"""

import random
from dataclasses import dataclass, replace
from typing import Any

from sloguard.api.sidecar_config import SLOClassConfig
from sloguard.bench import BenchResult
from sloguard.bench.plots import bars
from sloguard.bench.runner import EngineSetup, run_variant, score
from sloguard.bench.workloads import azure_code_trace, sharegpt_test_rows
from sloguard.sidecar.core.requests import RequestSpec

CHAT = SLOClassConfig(name="chat", ttft_s=10.0, tpot_s=0.05)
CODE = SLOClassConfig(name="code", ttft_s=30.0, tpot_s=30.0, deadline_s=30.0)
CLASSES = (CHAT, CODE)
POLICIES = ("fcfs", "edf", "sa", "sloguard", "oracle_sa", "oracle_sloguard")
PAPER_POLICIES = ("fcfs", "sa")


@dataclass(frozen=True)
class SaSpec:
    version: int
    requests: int
    max_batches: tuple[int, ...]
    seed: int
    setup: EngineSetup


SPEC = SaSpec(
    version=1, requests=40, max_batches=(1, 4, 16), seed=5, setup=EngineSetup(profile="llama-3-8b-a100")
)
QUICK = replace(SPEC, max_batches=(1, 4))


def build_requests(spec: SaSpec) -> list[RequestSpec]:
    rng = random.Random(spec.seed)
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
    specs = build_requests(spec)
    cases = []
    for max_batch in spec.max_batches:
        setup = replace(spec.setup, max_num_seqs=max_batch)
        results = {}
        for name in POLICIES:
            records = run_variant(name, specs, CLASSES, setup, seed=spec.seed, in_flight_cap=max_batch)
            total = score(records, specs)
            completed = total.requests - total.rejected
            results[name] = {
                "attainment": round(total.adherence, 4),
                "mean_latency_s": round(total.latency_sum_s / completed, 4) if completed else None,
                "G": round(total.met / total.latency_sum_s, 5) if total.latency_sum_s > 0 else 0.0,
                "rejected": total.rejected,
            }
        cases.append({"max_batch": max_batch, "policies": results})
    return {
        "spec_version": spec.version,
        "profile": spec.setup.profile,
        "requests": spec.requests,
        "cases": cases,
    }


def markdown(data: dict[str, Any]) -> str:
    out = [
        f"### sa (spec v{data['spec_version']}, {data['profile']}, {data['requests']} requests at once)",
        "",
        "attainment / mean latency (s) / G (met per second of summed latency); ratios are sloguard's.",
        "",
    ]
    names = list(data["cases"][0]["policies"])
    out.append(
        "| max batch | " + " | ".join(names) + " | sloguard / sa attainment | sloguard / fcfs attainment |"
    )
    out.append("|" + "---|" * (len(names) + 3))
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
            + f" | {rel(p['sloguard']['attainment'], p['fcfs']['attainment'])} |"
        )
    return "\n".join(out) + "\n"


def run(quick: bool) -> BenchResult:
    data = run_spec(QUICK if quick else SPEC)
    png = bars(
        [f"max batch {c['max_batch']}" for c in data["cases"]],
        {n: [c["policies"][n]["attainment"] for c in data["cases"]] for n in data["cases"][0]["policies"]},
        title="sa: SLO attainment, 40 requests at once",
        ylabel="attainment",
    )
    return BenchResult(data=data, markdown=markdown(data), files={"sa.png": png})
