"""`sloguard bench sim-speed`: simulated generated tokens per wall second of the engine simulator.

Workload: 10,000 requests (2,000 with --quick) with ShareGPT first-turn prompt and reply lengths
(shared/data/sharegpt_v3_first_turn, cycled; a seeded lognormal stand-in when the data is absent),
Poisson arrivals at 20 req/s, on the Llama-3-8B H100 profile with vLLM defaults (max_num_seqs 256,
8192 batched tokens, block 16). The driver submits each request at its arrival time, as a co-simulated
sidecar would, then runs the engine dry. Target: >= 1,000,000 tokens per wall second on one core.
"""

import json
import random
import time
from pathlib import Path

from sloguard.bench import BenchResult
from sloguard.sim.engine import Engine, EngineConfig, Finished, SimRequest
from sloguard.sim.profiles import load_profile

SHAREGPT = (
    Path(__file__).resolve().parent.parent.parent
    / "shared/data/sharegpt_v3_first_turn/sharegpt_v3_first_turn.jsonl"
)
RATE_PER_S = 20.0
MAX_MODEL_LEN = 8192


def _lengths(n: int, rng: random.Random) -> tuple[list[tuple[int, int]], str]:
    if SHAREGPT.is_file():
        pairs = []
        with SHAREGPT.open() as f:
            for line in f:
                rec = json.loads(line)
                p, o = int(rec["prompt_tokens_approx"]), int(rec["output_tokens_approx"])
                if min(p, o) >= 1 and p + o < MAX_MODEL_LEN:
                    pairs.append((p, o))
        return [
            pairs[i % len(pairs)] for i in range(n)
        ], f"ShareGPT first turns ({len(pairs)} records, cycled)"
    out = []
    for _ in range(n):
        p = min(int(rng.lognormvariate(4.5, 1.2)) + 1, 4000)
        o = min(int(rng.lognormvariate(5.3, 0.9)) + 1, 4000)
        out.append((p, o))
    return out, "lognormal ShareGPT-like stand-in (data folder absent)"


def run(quick: bool) -> BenchResult:
    n = 2_000 if quick else 10_000
    rng = random.Random(42)
    lengths, source = _lengths(n, rng)
    profile = load_profile("llama-3-8b-h100")
    engine = Engine(
        EngineConfig(num_gpu_blocks=profile.default_num_gpu_blocks, max_model_len=MAX_MODEL_LEN),
        profile.step_time(),
    )
    t = 0.0
    workload = []
    for i, (p, o) in enumerate(lengths):
        t += rng.expovariate(RATE_PER_S)
        workload.append(
            (t, SimRequest(f"r{i}", prompt_tokens=p, max_tokens=MAX_MODEL_LEN - p, eos_after_tokens=o))
        )
    tokens = 0
    finished = 0
    start = time.perf_counter()
    for arrival, request in workload:
        for event in engine.advance_to(arrival):
            if isinstance(event, Finished):
                tokens += event.output_tokens
                finished += 1
        engine.submit(request, arrival)
    for event in engine.run_until_idle():
        if isinstance(event, Finished):
            tokens += event.output_tokens
            finished += 1
    wall_s = time.perf_counter() - start
    if finished != n:
        raise RuntimeError(f"only {finished} of {n} requests finished")
    snap = engine.snapshot()
    rate = tokens / wall_s
    markdown = "\n".join(
        [
            "| workload | requests | generated tokens | simulated s | iterations | preemptions | wall s "
            "| sim tokens / wall s | target |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {source}, Poisson {RATE_PER_S:g} req/s, llama-3-8b-h100 | {n} | {tokens} "
            f"| {snap.now_s:.1f} | "
            f"{snap.steps} | {snap.num_preemptions_total} | {wall_s:.3f} | {rate:,.0f} | 1,000,000 |",
        ]
    )
    return BenchResult(data={"sim_tokens_per_s": rate, "requests": n, "wall_s": wall_s}, markdown=markdown)
