"""Benchmark `matrix`: every registered policy on random workload points nobody tuned for.

`sloguard bench matrix [--quick] --json FILE`. Each point is one seeded draw of every dimension
(`sloguard.bench.matrix_workloads`: engine profile and variant, chunked prefill, 2-8 SLO classes, arrival
process, length source, load 0.25x-3x of the capacity measured on that point's engine and requests). Every
registered policy and every `oracle_*` variant of those that predict lengths run on the same requests, each
with the engine's scheduling policy as the operator deploys it. Figures use `runner.score`: goodput = met /
offered window (first to last arrival), adherence = met / requests. Each policy's `prefix_hit_tokens` is the
prompt tokens the engine's prefix cache served (Mooncake-length points carry their `hash_ids`; prefix
caching is on, vLLM's default; other length sources carry no prefix information and hit nothing).

Seeds are split. `TUNING_SEEDS` is the only range any constant of a policy may be fit on (run it with
`python -m sloguard.bench.matrix --tuning N`); the report uses `REPORT_SEEDS`, a disjoint range, from which
the benchmark picks its points with a fixed generator and prints them.

Summary (the issue's definitions): `win_fraction` = share of points where sloguard's goodput >= every
non-oracle policy's x 0.995; `min_ratio_vs_fcfs` = the smallest sloguard / fcfs goodput; `min_ratio_vs_oracle`
= the smallest sloguard / oracle_sloguard goodput; `max_adherence_gap_pp` = the largest amount, in points,
by which the best non-oracle adherence exceeds sloguard's; `losses` = every point that fails one of
win / >= 0.99 x fcfs / >= 0.95 x oracle / gap <= 2 pp, with the reason.
"""

import argparse
import functools
import json
import multiprocessing
import os
import random
import statistics
import sys
from dataclasses import dataclass, replace
from typing import Any

from sloguard.bench import BenchResult
from sloguard.bench.matrix_workloads import (
    LENGTHS,
    Point,
    arrival_times,
    build_point,
    draw_point,
    length_pool,
)
from sloguard.bench.runner import ratio, run_variant, score
from sloguard.predictor import load_default_predictor
from sloguard.sidecar.core.requests import RequestSpec
from sloguard.sim.cosim import RequestRecord

OURS = "sloguard"
ORACLE = "oracle_sloguard"
FCFS = "fcfs"
BASELINES = ("fcfs", "sjf", "edf", "mooncake", "sa", "scorpio")
POLICIES = (*BASELINES, OURS, "oracle_sjf", "oracle_mooncake", "oracle_sa", "oracle_scorpio", ORACLE)
WIN_TOLERANCE = 0.995
FCFS_FLOOR = 0.99
ORACLE_FLOOR = 0.95
ADHERENCE_GAP_PP = 2.0
TUNING_SEEDS = range(0, 10_000)  # constants may be fit on these seeds only
REPORT_SEEDS = range(10_000, 20_000)  # the report's points, never used for tuning


@dataclass(frozen=True)
class MatrixSpec:
    version: int
    points: int
    requests_per_point: int
    jobs: int  # worker processes; results do not depend on it


SPEC = MatrixSpec(version=1, points=96, requests_per_point=256, jobs=2)
QUICK = replace(SPEC, points=48, requests_per_point=160)


def report_seeds(spec: MatrixSpec) -> list[int]:
    """The report's seeds: a fixed draw from REPORT_SEEDS (fixed per spec version), sorted."""
    rng = random.Random(f"matrix-report-v{spec.version}")
    return sorted(rng.sample(REPORT_SEEDS, spec.points))


def tuning_seeds(count: int) -> list[int]:
    rng = random.Random("matrix-tuning")
    return sorted(rng.sample(TUNING_SEEDS, count))


def measured_capacity_rps(point: Point) -> float:
    """vLLM fcfs throughput on the point's engine with every request arriving at t = 0."""
    specs = point.requests_at([0.0] * len(point.rows))
    records = run_variant(FCFS, specs, point.classes, point.setup, step_time=point.step_time)
    return len(specs) / max(r.finish_s or 0.0 for r in records)


def _result(records: list[RequestRecord], specs: list[RequestSpec]) -> dict[str, float]:
    total = score(records, specs)
    return {
        "goodput_rps": round(total.goodput_rps, 5),
        "adherence": round(total.adherence, 5),
        "rejected": total.rejected,
        "prefix_hit_tokens": sum(r.cached_tokens for r in records),
    }


def run_point(
    seed: int,
    requests: int,
    policies: tuple[str, ...] = POLICIES,
    variants: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One point: every policy in `policies`, plus sloguard with each of `variants`' parameters (an
    ablation, reported under the variant's name)."""
    params = draw_point(seed, requests)
    point = build_point(params)
    capacity = measured_capacity_rps(point)
    rate = params.load_factor * capacity
    specs = point.requests_at(arrival_times(params.arrivals, len(point.rows), rate, seed))
    results: dict[str, dict[str, float]] = {}
    for name in policies:
        records = run_variant(name, specs, point.classes, point.setup, seed=seed, step_time=point.step_time)
        results[name] = _result(records, specs)
    for name, parameters in (variants or {}).items():
        setup = replace(point.setup, policy_parameters={OURS: parameters})
        records = run_variant(OURS, specs, point.classes, setup, seed=seed, step_time=point.step_time)
        results[name] = _result(records, specs)
    return {
        "params": {
            **params.as_json(),
            "capacity_rps": round(capacity, 4),
            "rate_rps": round(rate, 4),
            "classes": [
                {"name": c.name, "ttft_s": c.ttft_s, "tpot_s": c.tpot_s, "priority": c.priority}
                for c in point.classes
            ],
        },
        "policies": results,
    }


def run_points(
    seeds: list[int],
    requests: int,
    jobs: int,
    policies: tuple[str, ...] = POLICIES,
    variants: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    load_default_predictor()  # load the shared data once, before any fork
    for source in LENGTHS:
        length_pool(source)
    work = functools.partial(run_point, requests=requests, policies=policies, variants=variants)
    if jobs <= 1:
        return [work(seed) for seed in seeds]
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        return pool.map(work, seeds, chunksize=1)


def summarise(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's summary over points (see the module docstring)."""
    wins = 0
    vs_fcfs, vs_oracle, gaps = [], [], []
    losses = []
    for point in points:
        pols = point["policies"]
        ours = pols[OURS]
        others = [n for n in pols if n in BASELINES]
        best = max(others, key=lambda n: pols[n]["goodput_rps"])
        best_adh = max(others, key=lambda n: pols[n]["adherence"])
        won = ours["goodput_rps"] >= pols[best]["goodput_rps"] * WIN_TOLERANCE
        wins += won
        r_fcfs = ratio(ours["goodput_rps"], pols[FCFS]["goodput_rps"])
        r_oracle = ratio(ours["goodput_rps"], pols[ORACLE]["goodput_rps"]) if ORACLE in pols else 1.0
        gap_pp = 100.0 * (pols[best_adh]["adherence"] - ours["adherence"])
        vs_fcfs.append(r_fcfs)
        vs_oracle.append(r_oracle)
        gaps.append(gap_pp)
        reasons = []
        if not won:
            reasons.append(f"goodput {ratio(ours['goodput_rps'], pols[best]['goodput_rps']):.3f}x {best}")
        if r_fcfs < FCFS_FLOOR:
            reasons.append(f"{r_fcfs:.3f}x fcfs")
        if r_oracle < ORACLE_FLOOR:
            reasons.append(f"{r_oracle:.3f}x oracle_sloguard")
        if gap_pp > ADHERENCE_GAP_PP:
            reasons.append(f"adherence {gap_pp:.1f} pp below {best_adh}")
        if reasons:
            p = point["params"]
            losses.append(
                {
                    "seed": p["seed"],
                    "why": "; ".join(reasons),
                    "workload": _describe(p),
                    "sloguard": ours,
                    "best": {"name": best, **pols[best]},
                }
            )
    return {
        "points": len(points),
        "win_fraction": round(wins / len(points), 4) if points else 0.0,
        "min_ratio_vs_fcfs": round(min(vs_fcfs), 4) if vs_fcfs else 0.0,
        "min_ratio_vs_oracle": round(min(vs_oracle), 4) if vs_oracle else 0.0,
        "max_adherence_gap_pp": round(max(gaps), 2) if gaps else 0.0,
        "median_ratio_vs_fcfs": round(statistics.median(vs_fcfs), 4) if vs_fcfs else 0.0,
        "losses": losses,
    }


def _describe(p: dict[str, Any]) -> str:
    return (
        f"{p['profile'].removeprefix('llama-3-8b-')} {p['engine_variant']}"
        f"{' chunked' if p['chunked_prefill'] else ''}, {p['class_count']} classes, "
        f"{p['arrivals']} arrivals, {p['lengths']} lengths, {p['load_factor']:.2f}x"
    )


def run_spec(spec: MatrixSpec, seeds: list[int] | None = None) -> dict[str, Any]:
    chosen = seeds if seeds is not None else report_seeds(spec)
    jobs = int(os.environ.get("SLOGUARD_BENCH_JOBS", spec.jobs))
    points = run_points(chosen, spec.requests_per_point, max(1, min(jobs, os.cpu_count() or 1)))
    return {
        "spec_version": spec.version,
        "requests_per_point": spec.requests_per_point,
        "seed_split": {
            "tuning": [TUNING_SEEDS.start, TUNING_SEEDS.stop],
            "report": [REPORT_SEEDS.start, REPORT_SEEDS.stop],
        },
        "seeds": chosen,
        "points": points,
        "summary": summarise(points),
    }


def _cell(pols: dict[str, Any], name: str) -> str:
    return f"{pols[name]['goodput_rps']:.3f} / {pols[name]['adherence']:.3f}"


def markdown(data: dict[str, Any]) -> str:
    s = data["summary"]
    out = [
        f"### matrix (spec v{data['spec_version']}, {s['points']} points of {data['requests_per_point']} "
        f"requests, report seeds {', '.join(map(str, data['seeds']))})",
        "",
        f"win_fraction {s['win_fraction']}, min sloguard/fcfs {s['min_ratio_vs_fcfs']}, "
        f"min sloguard/oracle_sloguard {s['min_ratio_vs_oracle']}, max adherence gap "
        f"{s['max_adherence_gap_pp']} pp, median sloguard/fcfs {s['median_ratio_vs_fcfs']}",
        "",
        "Goodput (req/s met over the arrival window) / adherence per point; the baseline is the best "
        "non-oracle policy by goodput, the ratio sloguard's goodput over it.",
        "",
        "| seed | workload | sloguard | fcfs | best baseline | ratio | oracle_sloguard |",
        "|---|---|---|---|---|---|---|",
    ]
    for point in data["points"]:
        p, pols = point["params"], point["policies"]
        best = max((n for n in pols if n in BASELINES), key=lambda n: pols[n]["goodput_rps"])
        out.append(
            f"| {p['seed']} | {_describe(p)} | {_cell(pols, OURS)} | {_cell(pols, FCFS)} | "
            f"{best} {_cell(pols, best)} | "
            f"{ratio(pols[OURS]['goodput_rps'], pols[best]['goodput_rps']):.3f} | {_cell(pols, ORACLE)} |"
        )
    out += ["", f"Losses ({len(s['losses'])}):", ""]
    lines = [f"- seed {loss['seed']} ({loss['workload']}): {loss['why']}" for loss in s["losses"]]
    out += lines or ["- none"]
    return "\n".join(out) + "\n"


def run(quick: bool) -> BenchResult:
    data = run_spec(QUICK if quick else SPEC)
    return BenchResult(data=data, markdown=markdown(data))


def main(argv: list[str] | None = None) -> int:
    """`python -m sloguard.bench.matrix --tuning N [--requests R] [--seed S ...] [--variant NAME=JSON ...]`:
    points from the tuning range only (never the report's), with sloguard parameter variants beside the
    policies for ablations; prints, per variant, the points it wins (goodput >= 0.995 x the best
    non-oracle baseline and adherence within 2 points of the best) and its smallest ratio to fcfs."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--tuning", type=int, default=24, help="number of tuning seeds to draw")
    parser.add_argument("--requests", type=int, default=QUICK.requests_per_point)
    parser.add_argument("--seed", type=int, action="append", help="explicit tuning seeds instead")
    parser.add_argument("--variant", action="append", default=[], help='NAME={"parameter": value}')
    args = parser.parse_args(argv)
    seeds = args.seed or tuning_seeds(args.tuning)
    if any(s not in TUNING_SEEDS for s in seeds):
        parser.error(f"tuning seeds must lie in [{TUNING_SEEDS.start}, {TUNING_SEEDS.stop})")
    variants: dict[str, dict[str, Any]] = {}
    for text in args.variant:
        name, sep, parameters = text.partition("=")
        if not sep or not name:
            parser.error(f"--variant takes NAME=JSON, got {text!r}")
        try:
            variants[name] = json.loads(parameters)
        except json.JSONDecodeError as exc:
            parser.error(f"--variant {name}: {exc}")
    jobs = int(os.environ.get("SLOGUARD_BENCH_JOBS", SPEC.jobs))
    points = run_points(seeds, args.requests, max(1, jobs), (*BASELINES, OURS), variants)
    for name in (OURS, *variants):
        won, worst = 0, float("inf")
        for point in points:
            pols = point["policies"]
            best = max(pols[n]["goodput_rps"] for n in BASELINES)
            best_adherence = max(pols[n]["adherence"] for n in BASELINES)
            ours = pols[name]
            won += ours["goodput_rps"] >= best * WIN_TOLERANCE and (
                100.0 * (best_adherence - ours["adherence"]) <= ADHERENCE_GAP_PP
            )
            worst = min(worst, ratio(ours["goodput_rps"], pols[FCFS]["goodput_rps"]))
        print(f"{name}: wins {won} of {len(points)}, min ratio vs fcfs {worst:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
