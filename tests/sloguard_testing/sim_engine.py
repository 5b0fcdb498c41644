"""Shared helpers for the simulator tests: a toy step-time model and workload drivers."""

import random
from typing import Any

from sloguard.sim.engine import Engine, EngineConfig, Finished, SimRequest
from sloguard.sim.engine.events import EngineEvent
from sloguard.sim.engine.step_time import ProfileStepTime

TOY_MODEL: dict[str, Any] = {
    "layers": 32,
    "linear_ms_per_layer": {"num_tokens": [1, 256, 1024, 8192], "ms": [0.3, 0.33, 0.8, 6.0]},
    "kv_save_ms_per_token": 1e-5,
    "decode_attention": {"const_ms": 0.0116, "per_kv_token_ms": 2.63e-6},
    "prefill_attention": {"per_token_ms": 6.5e-5, "per_token_sq_ms": 4.25e-8, "per_token_ctx_ms": 3e-8},
    "cpu_overhead": {"base_ms": 1.0, "per_seq_ms": 0.01},
}


def toy_step_time() -> ProfileStepTime:
    return ProfileStepTime(TOY_MODEL)


def random_workload(seed: int, n: int, *, rate_per_s: float = 20.0) -> list[tuple[float, SimRequest]]:
    rng = random.Random(seed)
    t = 0.0
    out = []
    for i in range(n):
        t += rng.expovariate(rate_per_s)
        max_tokens = rng.randint(1, 300)
        out.append(
            (
                t,
                SimRequest(
                    f"r{i}",
                    prompt_tokens=rng.randint(1, 600),
                    max_tokens=max_tokens,
                    min_tokens=rng.choice([0, 0, min(3, max_tokens)]),
                    ignore_eos=rng.random() < 0.5,
                    priority=rng.randint(-2, 2),
                ),
            )
        )
    return out


def drive(engine: Engine, workload: list[tuple[float, SimRequest]]) -> list[EngineEvent]:
    """Submit each request at its arrival time, then run to idle; all events in order."""
    events: list[EngineEvent] = []
    for t, req in workload:
        events += engine.advance_to(t)
        engine.submit(req, t)
    events += engine.run_until_idle()
    return events


def finished_by_id(events: list[EngineEvent]) -> dict[str, Finished]:
    return {e.request_id: e for e in events if isinstance(e, Finished)}


def make_engine(*, fast: bool = True, **overrides: Any) -> Engine:
    cfg: dict[str, Any] = {
        "num_gpu_blocks": 2000,
        "block_size": 16,
        "max_num_seqs": 32,
        "max_num_batched_tokens": 512,
        "max_model_len": 1024,
    }
    cfg.update(overrides)
    return Engine(EngineConfig(**cfg), toy_step_time(), fast=fast)
