"""The simulator's prefix cache reproduces the reuse the Mooncake conversation trace implies.

The trace's `hash_ids` name 512-token prompt blocks; 36.6 % of its blocks repeat an earlier one
(shared/data/README.md). With a cache that never evicts and requests run one at a time, the engine's
hit rate (vLLM's units: hit tokens / queried prompt tokens) must equal the rate computed from the data
alone; with a smaller cache, LRU eviction can only lower it.
"""

import pytest
from sloguard_testing.sim_engine import toy_step_time

from sloguard.bench.workloads import (
    MOONCAKE_BLOCK_TOKENS,
    MooncakeRow,
    data_dir,
    mooncake_block_reuse,
    mooncake_conversation_trace,
    mooncake_implied_hit_rate,
)
from sloguard.sim.engine import Engine, EngineConfig, SimRequest

try:
    data_dir()
    HAVE_DATA = True
except FileNotFoundError:
    HAVE_DATA = False
pytestmark = pytest.mark.skipif(not HAVE_DATA, reason="shared/data is not available")

MAX_MODEL_LEN = 131_072  # the trace's longest prompt is 126,195 tokens
ROWS = 1000  # the first 1,000 requests: 13.7 M prompt tokens


def _hit_rate(rows: tuple[MooncakeRow, ...], num_gpu_blocks: int) -> float:
    engine = Engine(EngineConfig(num_gpu_blocks=num_gpu_blocks, max_model_len=MAX_MODEL_LEN), toy_step_time())
    t = 0.0
    for i, row in enumerate(rows):
        engine.submit(
            SimRequest(
                f"m{i}",
                prompt_tokens=row.prompt_tokens,
                max_tokens=row.output_tokens,
                ignore_eos=True,
                prefix_hashes=row.hash_ids,
                prefix_block_tokens=MOONCAKE_BLOCK_TOKENS,
            ),
            t,
        )
        t += 1e5  # far past its finish: one request at a time
        engine.advance_to(t)
        assert engine.snapshot().running == 0
    snap = engine.snapshot()
    assert snap.prefix_cache_queries_tokens == sum(r.prompt_tokens for r in rows)
    return snap.prefix_cache_hits_tokens / snap.prefix_cache_queries_tokens


def test_the_trace_reuses_37_percent_of_its_prefix_blocks() -> None:
    rows = mooncake_conversation_trace()
    assert len(rows) == 12_031
    assert mooncake_block_reuse(rows) == pytest.approx(0.366, abs=0.0005)
    # in vLLM's units on 16-token blocks (leading run only, last token recomputed): 37.4 %
    assert mooncake_implied_hit_rate(rows, 16) == pytest.approx(0.3736, abs=0.0005)


def test_simulated_hit_rate_equals_the_rate_the_trace_implies() -> None:
    rows = mooncake_conversation_trace()[:ROWS]
    implied = mooncake_implied_hit_rate(rows, 16)
    assert implied > 0.2
    never_evicts = sum(-(-r.prompt_tokens // 16) + r.output_tokens // 16 + 1 for r in rows) + 1
    assert _hit_rate(rows, never_evicts) == pytest.approx(implied, abs=0.002)


def test_a_smaller_cache_evicts_and_hits_less() -> None:
    rows = mooncake_conversation_trace()[:300]
    roomy = _hit_rate(rows, 600_000)
    small = _hit_rate(rows, 12_000)  # 192 k tokens: about 14 average prompts
    assert 0.0 < small < roomy
