"""What a client asks of the simulated engine, and how long the answer will be.

Sits at the bottom of `sloguard.sim.engine`: the engine, the HTTP server and the benchmarks build
`SimRequest`s; `resolve_output_length` decides (deterministically, from a seed) how many tokens a request
will generate and why it stops, the way a real model's EOS would.
"""

import math
import random
from dataclasses import dataclass
from typing import Literal

FinishReason = Literal[
    "stop", "length", "abort", "reject"
]  # reject: an engine-integrated scheduler refused it


@dataclass(frozen=True, slots=True)
class SimRequest:
    """One generation request as the engine sees it.

    `eos_after_tokens` is the length the "model" would naturally produce (e.g. a trace's real output
    length); when None and `ignore_eos` is false, a seeded draw decides. `priority`: lower runs first,
    used only under the priority scheduling policy (as in vLLM).

    Prefix information, for the engine's prefix cache (`sloguard.sim.engine.prefix_cache`):
    `prefix_hashes` names the prompt's blocks of `prefix_block_tokens` tokens each (Mooncake's
    `hash_ids`, 512-token blocks; equal values = equal content, the last block may be partial), or
    `prompt_token_ids` gives the prompt itself (its length must be `prompt_tokens`). A request with
    neither takes no part in prefix caching.
    """

    request_id: str
    prompt_tokens: int
    max_tokens: int
    min_tokens: int = 0
    ignore_eos: bool = False
    priority: int = 0
    eos_after_tokens: int | None = None
    prefix_hashes: tuple[int, ...] | None = None
    prefix_block_tokens: int = 0
    prompt_token_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.prompt_tokens < 1:
            raise ValueError(f"prompt_tokens must be >= 1, got {self.prompt_tokens}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(
                f"min_tokens must be in [0, max_tokens={self.max_tokens}], got {self.min_tokens}"
            )
        if self.eos_after_tokens is not None and self.eos_after_tokens < 1:
            raise ValueError(f"eos_after_tokens must be >= 1, got {self.eos_after_tokens}")
        if self.prefix_hashes is not None:
            if self.prefix_block_tokens < 1:
                raise ValueError(
                    f"prefix_hashes need prefix_block_tokens >= 1, got {self.prefix_block_tokens}"
                )
            if self.prompt_token_ids is not None:
                raise ValueError("give prefix_hashes or prompt_token_ids, not both")
        if self.prompt_token_ids is not None and len(self.prompt_token_ids) != self.prompt_tokens:
            raise ValueError(
                f"prompt_token_ids has {len(self.prompt_token_ids)} ids, "
                f"prompt_tokens is {self.prompt_tokens}"
            )


def draw_natural_length(seed: int, request_id: str, mean_tokens: float) -> int:
    """A geometric draw (a constant per-token EOS probability), reproducible per (seed, request_id)."""
    rng = random.Random(f"{seed}:{request_id}")
    p = 1.0 / max(mean_tokens, 1.0)
    u = rng.random()
    return 1 + int(math.log1p(-u) / math.log1p(-p)) if p < 1.0 else 1


def resolve_output_length(request: SimRequest, *, seed: int, mean_tokens: float) -> tuple[int, FinishReason]:
    """How many tokens the request generates, and the finish reason it reports (vLLM semantics).

    ignore_eos: exactly max_tokens, "length". Otherwise the natural length (EOS counted as a token, as
    vLLM counts it), held back to at least min_tokens + 1 (EOS is suppressed for min_tokens tokens) and
    cut at max_tokens ("length").
    """
    if request.ignore_eos:
        return request.max_tokens, "length"
    natural = request.eos_after_tokens
    if natural is None:
        natural = draw_natural_length(seed, request.request_id, mean_tokens)
    if request.min_tokens > 0:
        natural = max(natural, request.min_tokens + 1)
    if natural >= request.max_tokens:
        return request.max_tokens, "length"
    return natural, "stop"
