"""`sloguard bench autoscale`: the autoscaling policies on a simulated cluster, same workload, same guard.

Workload: the Azure 2023 conversation trace (shared/data, real arrival times and token counts) as the
interactive class (TTFT 1 s, TPOT 100 ms, 99 %), plus a backlog of batch requests (token counts sampled
from the same trace) submitted at t = 0 with a one-hour deadline (TPOT 200 ms, 99 %). One Mixed pool
(Chiron's mixed instances: interactive first, batch spills into spare capacity), Llama-3-8B on the
H100 step-time profile, the SLOGuard sidecar policy in every pod, a 120 s cold start, autoscaler ticks
every 15 s with the spec's default cooldowns and steps (`sloguard.sim.cluster`).

Policies: `static` (peak provisioning: `maxReplicas` pods for the whole run, warm from t = 0), and the
three autoscalers of `sloguard.operator.core.autoscaling` — `threshold` (KV >= 0.8 or queue >= 5 per
pod), `chiron` (the reconstruction) and `sloguard` — each starting from one warm pod. GPU-hours count
every pod from creation (cold start included) to removal (after its drain) or the end of the run.
Goodput (`bench.runner.score`): SLO-met requests, every class or the interactive class alone, per second of
the offered window (first to last arrival of the run).

`--quick`: the first 10 minutes of the trace, a 10-minute deadline and a backlog scaled to it.
"""

import functools
import io
import time
from dataclasses import dataclass
from typing import Any

from sloguard.api.inferencepool import (
    AutoscalingSpec,
    EngineSpec,
    InferencePoolSpec,
    PoolRole,
    SidecarLimits,
    SidecarSpec,
)
from sloguard.bench import BenchResult
from sloguard.bench.runner import score
from sloguard.operator.core.autoscaling import POLICIES, AutoscalerLoop, ScalingContext
from sloguard.sim.cluster import ClusterConfig, ClusterResult, ClusterSimulation
from sloguard.sim.cluster.workload import (
    INTERACTIVE,
    TraceRow,
    batch_backlog,
    batch_class,
    interactive_requests,
    load_azure_trace,
    window,
)

POLICY_ORDER = ("static", "threshold", "chiron", "sloguard")
SEED = 1


@dataclass(frozen=True)
class Scenario:
    name: str
    span_s: float  # interactive: the trace's first span_s seconds
    deadline_s: float
    batch_requests: int
    max_replicas: int
    startup: str = "2m"
    in_flight_cap: int = 64


FULL = Scenario("full", span_s=3600.0, deadline_s=3600.0, batch_requests=40_000, max_replicas=8)
QUICK = Scenario("quick", span_s=600.0, deadline_s=600.0, batch_requests=4_000, max_replicas=8)


def pool_spec(scenario: Scenario) -> InferencePoolSpec:
    return InferencePoolSpec(
        model="meta-llama/Meta-Llama-3-8B",
        engine=EngineSpec(image="vllm/vllm-openai", startup_time=scenario.startup),
        slo_classes=["interactive", "batch"],
        min_replicas=1,
        max_replicas=scenario.max_replicas,
        role=PoolRole.MIXED,
        autoscaling=AutoscalingSpec(enabled=True, prometheus_url="http://prometheus:9090"),
        sidecar=SidecarSpec(limits=SidecarLimits(max_in_flight=scenario.in_flight_cap)),
    )


@functools.cache
def _trace() -> tuple[TraceRow, ...]:
    return tuple(load_azure_trace())


def build_config(scenario: Scenario, *, static: bool) -> ClusterConfig:
    rows = _trace()
    batch = batch_class(scenario.deadline_s)
    return ClusterConfig(
        spec=pool_spec(scenario),
        classes=(INTERACTIVE, batch),
        interactive=tuple(interactive_requests(window(rows, scenario.span_s))),
        batch=tuple(batch_backlog(rows, scenario.batch_requests, batch, seed=SEED)),
        horizon_s=max(scenario.span_s, scenario.deadline_s),
        initial_replicas=scenario.max_replicas if static else 1,
        seed=SEED,
    )


def run_policy(scenario: Scenario, policy: str) -> tuple[ClusterResult, float]:
    config = build_config(scenario, static=policy == "static")
    loop = None
    if policy != "static":
        loop = AutoscalerLoop(POLICIES[policy](), ScalingContext.from_spec(config.spec, list(config.classes)))
    start = time.perf_counter()
    result = ClusterSimulation(config, loop).run()
    return result, time.perf_counter() - start


def summary(result: ClusterResult, wall_s: float) -> dict[str, Any]:
    peak = max((p.ready + p.starting + p.draining for p in result.timeline), default=0)
    records, specs = list(result.records.values()), list(result.specs.values())
    return {
        "goodput_rps": round(score(records, specs).goodput_rps, 4),
        "interactive_goodput_rps": round(score(records, specs, "interactive").goodput_rps, 4),
        "interactive_attainment": round(result.attainment("interactive"), 5),
        "batch_deadline_attainment": round(result.attainment("batch"), 5),
        "gpu_hours": round(result.gpu_hours, 4),
        "scale_events": result.scale_events,
        "peak_replicas": peak,
        "replicas_created": result.replicas_created,
        "requests": len(result.records),
        "end_s": round(result.end_s, 1),
        "wall_s": round(wall_s, 1),
    }


def plot(results: dict[str, ClusterResult], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom, batch) = plt.subplots(3, 1, figsize=(9, 8.5), sharex=True)
    for name, result in results.items():
        times = [p.time_s / 60.0 for p in result.timeline]
        top.step(
            times, [p.ready + p.starting + p.draining for p in result.timeline], where="post", label=name
        )
        att = [(p.time_s / 60.0, p.interactive_attainment) for p in result.timeline]
        bottom.plot([t for t, a in att if a is not None], [a for _, a in att if a is not None], label=name)
        total = sum(1 for r in result.records.values() if r.slo_class == "batch") or 1
        batch.plot(times, [p.batch_done / total for p in result.timeline], label=name)
    top.set_ylabel("pods (ready + starting + draining)")
    top.set_title(title)
    top.legend(loc="upper right")
    bottom.set_ylabel("interactive attainment (last 60 s)")
    batch.set_ylabel("batch requests ended (fraction)")
    batch.set_xlabel("time (min)")
    bottom.axhline(0.99, color="grey", linestyle=":", linewidth=1)
    bottom.set_ylim(
        max(
            0.0, min([0.9, *[p.interactive_attainment or 1.0 for r in results.values() for p in r.timeline]])
        ),
        1.005,
    )
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def run(quick: bool) -> BenchResult:
    return run_scenario(QUICK if quick else FULL)


def run_scenario(scenario: Scenario) -> BenchResult:
    """Every policy on `scenario`: the JSON figures, the Markdown table and the plot."""
    results: dict[str, ClusterResult] = {}
    figures: dict[str, dict[str, Any]] = {}
    for policy in POLICY_ORDER:
        result, wall_s = run_policy(scenario, policy)
        results[policy] = result
        figures[policy] = summary(result, wall_s)
    interactive_n = sum(1 for r in results["static"].records.values() if r.slo_class == "interactive")
    workload = (
        f"Azure conv trace, first {scenario.span_s / 60:.0f} min ({interactive_n} interactive, TTFT 1 s / "
        f"TPOT 100 ms) + {scenario.batch_requests} batch at t=0 "
        f"(deadline {scenario.deadline_s / 60:.0f} min); "
        f"Mixed pool, H100 Llama-3-8B, cold start {scenario.startup}, maxReplicas {scenario.max_replicas}"
    )
    threshold_gpu = figures["threshold"]["gpu_hours"]
    lines = [
        f"Workload: {workload}.",
        "",
        "| policy | goodput (req/s) | interactive goodput | interactive attainment | batch deadlines met "
        "| GPU-hours | GPU-h vs threshold | scale events | peak pods | sim wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for policy in POLICY_ORDER:
        f = figures[policy]
        ratio = f["gpu_hours"] / threshold_gpu if threshold_gpu else float("nan")
        lines.append(
            f"| {policy} | {f['goodput_rps']:.3f} | {f['interactive_goodput_rps']:.3f} "
            f"| {f['interactive_attainment']:.4f} | {f['batch_deadline_attainment']:.4f} | "
            f"{f['gpu_hours']:.2f} | {ratio:.2f} | {f['scale_events']} | {f['peak_replicas']} | "
            f"{f['wall_s']} |"
        )
    ours = figures["sloguard"]
    saving = 1.0 - ours["gpu_hours"] / threshold_gpu if threshold_gpu else 0.0
    goal = (
        ours["interactive_attainment"] >= 0.99 and ours["batch_deadline_attainment"] >= 1.0 and saving >= 0.30
    )
    lines += [
        "",
        f"Goal (sloguard: >= 99% interactive, every batch deadline, >= 30% fewer GPU-hours than threshold): "
        f"{'met' if goal else 'NOT met'} — {saving * 100:.0f}% fewer GPU-hours.",
    ]
    plot_name = "autoscale.png"
    lines.append(f"Plot: {plot_name}, beside this table")
    data = {
        "policies": figures,
        "scenario": {
            "name": scenario.name,
            "span_s": scenario.span_s,
            "deadline_s": scenario.deadline_s,
            "batch_requests": scenario.batch_requests,
            "interactive_requests": interactive_n,
            "max_replicas": scenario.max_replicas,
            "startup": scenario.startup,
        },
        "goal_met": goal,
        "gpu_hours_saving_vs_threshold": round(saving, 4),
    }
    png = plot(results, f"autoscale ({scenario.name}): pods and interactive attainment")
    return BenchResult(data=data, markdown="\n".join(lines) + "\n", files={plot_name: png})
