"""What the engine reports: per-request events from `Engine.advance_to`, and a read-only snapshot.

Consumers: the HTTP server (streams and metrics), the benchmarks and the cluster simulation.
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sloguard.sim.engine.request import FinishReason


@dataclass(frozen=True, slots=True)
class FirstToken:
    """The request's first output token. `cached_tokens`: prompt tokens its first admission found in
    the prefix cache (vLLM's num_cached_tokens; 0 without prefix caching)."""

    request_id: str
    time_s: float
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Preempted:
    request_id: str
    time_s: float


@dataclass(frozen=True, slots=True)
class Finished:
    """The request left the engine. `token_times_s[i]` is when output token i was generated."""

    request_id: str
    time_s: float
    finish_reason: FinishReason
    prompt_tokens: int
    output_tokens: int
    token_times_s: npt.NDArray[np.float64]
    arrival_s: float
    first_scheduled_s: float | None
    num_preemptions: int


EngineEvent = FirstToken | Preempted | Finished


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    now_s: float
    running: int
    waiting: int
    kv_blocks_used: int
    kv_blocks_total: int  # usable blocks: num_gpu_blocks - 1 (vLLM reserves a null block)
    num_preemptions_total: int
    steps: int
    prefix_cache_queries_tokens: int = 0  # vLLM's prefix_cache_queries_total (tokens)
    prefix_cache_hits_tokens: int = 0  # vLLM's prefix_cache_hits_total (tokens)

    @property
    def kv_cache_usage(self) -> float:
        """vLLM's kv_cache_usage_perc: used / (num_gpu_blocks - 1), a fraction in [0, 1]."""
        return self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total else 0.0
