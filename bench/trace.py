"""Benchmark `trace`: SCORPIO's trace run (cumulative SLO-met requests over a real production trace).

Set-up (reference/papers.md §1.6, §6.6), versioned in `SPEC`: the first 20 minutes of the Azure LLM
inference 2023 conversation trace, replayed by timestamp with its real prompt and output token counts,
time-compressed so that the window's mean rate is `load_factor` x the profile's measured capacity for
this workload (vLLM V1 fcfs throughput with the window's first 512 requests all arriving at once); its
bursts then go well above capacity. Requests longer than the engine's context (prompt + output > 8192)
are dropped (counted in the report). SLO classes: SCORPIO's three, drawn uniformly with a fixed seed.
Engine as in the `scorpio` scenario but with an 8192-token context (the trace's prompts reach 8k).
Output: goodput (SLO-met requests per second of the offered window, `bench.runner.score`) and adherence per
policy, and the cumulative SLO-met curve over trace time (plot).
"""

import random
from dataclasses import dataclass, replace
from typing import Any

from sloguard.bench import BenchResult
from sloguard.bench.plots import lines
from sloguard.bench.runner import EngineSetup, fmt_ratio, ratio, run_variant, score
from sloguard.bench.scorpio import CLASSES
from sloguard.bench.workloads import azure_conv_trace
from sloguard.sidecar.core.requests import RequestSpec

POLICIES = ("fcfs", "fcfs-v0", "mooncake", "sjf", "scorpio-engine", "scorpio", "sloguard")
PAPER_POLICIES = ("fcfs", "fcfs-v0", "mooncake", "sjf", "scorpio-engine", "scorpio")


@dataclass(frozen=True)
class TraceSpec:
    version: int
    window_s: float
    load_factor: float
    class_seed: int
    setup: EngineSetup


SPEC = TraceSpec(
    version=1,
    window_s=1200.0,
    load_factor=1.0,
    class_seed=7,
    setup=EngineSetup(
        profile="llama-3-8b-a100",
        max_num_batched_tokens=8192,
        max_model_len=8192,
        enable_chunked_prefill=False,
        scorpio_prefill_budget_tokens=1024,
    ),
)
QUICK = replace(SPEC, window_s=240.0)


def _requests(
    spec: TraceSpec, scale: float, *, all_at_once: int | None = None
) -> tuple[list[RequestSpec], int]:
    rng = random.Random(spec.class_seed)
    out: list[RequestSpec] = []
    dropped = 0
    for i, row in enumerate(r for r in azure_conv_trace() if r.arrival_s < spec.window_s):
        if all_at_once is not None and len(out) >= all_at_once:
            break
        slo_class = rng.choice(CLASSES)
        if row.prompt_tokens + row.output_tokens > spec.setup.max_model_len or row.prompt_tokens < 1:
            dropped += 1
            continue
        out.append(
            RequestSpec.from_class(
                slo_class,
                request_id=f"t{i}",
                prompt_tokens=row.prompt_tokens,
                max_tokens=spec.setup.max_model_len - row.prompt_tokens,
                arrival_s=0.0 if all_at_once is not None else row.arrival_s / scale,
                true_output_tokens=row.output_tokens,
            )
        )
    return out, dropped


def run_spec(spec: TraceSpec) -> dict[str, Any]:
    probe, _ = _requests(spec, 1.0, all_at_once=512)
    records = run_variant("fcfs", probe, CLASSES, spec.setup)
    capacity = len(probe) / max(r.finish_s or 0.0 for r in records)
    window, _ = _requests(spec, 1.0)
    trace_rate = len(window) / spec.window_s
    scale = spec.load_factor * capacity / trace_rate  # time compression (>1: faster than real time)
    specs, dropped = _requests(spec, scale)
    by_id = {s.request_id: s for s in specs}
    results: dict[str, dict[str, Any]] = {}
    for name in POLICIES:
        records = run_variant(name, specs, CLASSES, spec.setup)
        met_times = sorted((r.finish_s or 0.0) for r in records if r.met(by_id[r.request_id]))
        total = score(records, specs)
        results[name] = {
            "slo_met": total.met,
            "goodput_rps": round(total.goodput_rps, 4),
            "adherence": round(total.adherence, 4),
            "requests": total.requests,
            "rejected": total.rejected,
            "met_times_s": [round(t, 2) for t in met_times],
        }
    return {
        "spec_version": spec.version,
        "profile": spec.setup.profile,
        "window_s": spec.window_s,
        "capacity_rps": round(capacity, 3),
        "trace_rate_rps": round(trace_rate, 3),
        "time_compression": round(scale, 3),
        "dropped_too_long": dropped,
        "policies": results,
    }


def markdown(data: dict[str, Any]) -> str:
    p = data["policies"]
    best = max(PAPER_POLICIES, key=lambda n: p[n]["slo_met"])
    out = [
        f"### trace (spec v{data['spec_version']}, {data['profile']}, Azure 2023 conv, first "
        f"{data['window_s']:.0f} s, compressed {data['time_compression']}x to a mean of "
        f"{data['trace_rate_rps'] * data['time_compression']:.2f} req/s = capacity "
        f"{data['capacity_rps']} req/s; "
        f"{data['dropped_too_long']} requests over 8192 tokens dropped)",
        "",
        "Goodput: SLO-met requests per second of the offered window (first to last arrival); adherence: met"
        " / requests (rejections are misses).",
        "",
        "| policy | goodput (req/s) | adherence | SLO met | requests | rejected | sloguard / this |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in p.items():
        rel = fmt_ratio(ratio(p["sloguard"]["goodput_rps"], r["goodput_rps"]))
        out.append(
            f"| {name} | {r['goodput_rps']:.3f} | {r['adherence']:.3f} | {r['slo_met']} | {r['requests']} "
            f"| {r['rejected']} | {rel} |"
        )
    out += ["", f"Best reproduced paper policy: {best}."]
    return "\n".join(out) + "\n"


def run(quick: bool) -> BenchResult:
    data = run_spec(QUICK if quick else SPEC)
    series: dict[str, list[float]] = {}
    grid = [data["window_s"] / data["time_compression"] * i / 50 for i in range(51)]
    for name, r in data["policies"].items():
        times = r["met_times_s"]
        series[name] = [float(sum(t <= g for t in times)) for g in grid]
    png = lines(
        grid,
        series,
        title="trace: cumulative SLO-met requests (Azure 2023 conv)",
        xlabel="time (s, compressed)",
        ylabel="SLO-met requests",
    )
    for r in data["policies"].values():
        del r["met_times_s"]  # the curve is in the plot; the JSON keeps the totals
    return BenchResult(data=data, markdown=markdown(data), files={"trace.png": png})
