"""Prefix caching in the simulated engine: exact cases, LRU eviction order, invariants under random load.

Semantics under test are vLLM 0.32's (see the docstring of `sloguard.sim.engine.prefix_cache`).
"""

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sloguard_testing.sim_engine import drive, finished_by_id, make_engine

from sloguard.sim.engine import Engine, EngineEvent, Finished, FirstToken, SimRequest
from sloguard.sim.engine.prefix_cache import PrefixCache, SeqPrefix, chain_hashes
from sloguard.sim.engine.state import RUNNING

BS = 16


def _req(rid: str, prompt: int, hashes: tuple[int, ...] | None, hb: int = 32, out: int = 4) -> SimRequest:
    return SimRequest(
        rid,
        prompt_tokens=prompt,
        max_tokens=out,
        ignore_eos=True,
        prefix_hashes=hashes,
        prefix_block_tokens=hb if hashes is not None else 0,
    )


def _one_at_a_time(engine: Engine, requests: list[SimRequest]) -> dict[str, int]:
    """Run each request alone on the engine; the cached tokens each one's admission found."""
    cached: dict[str, int] = {}
    t = 0.0
    for req in requests:
        engine.submit(req, t)
        t += 1000.0
        for e in engine.advance_to(t):
            if isinstance(e, FirstToken):
                cached[e.request_id] = e.cached_tokens
        assert engine.snapshot().running == 0
    return cached


@dataclass(frozen=True)
class Case:
    name: str
    first: SimRequest
    second: SimRequest
    expect_hit_tokens: int


CASES = [
    Case(
        "same hashes, whole blocks: hit all but the block holding the last token",
        _req("a", 64, (1, 2)),
        _req("b", 64, (1, 2)),
        48,
    ),
    Case(
        "same hashes, partial last block: hit the full blocks before it",
        _req("a", 70, (1, 2, 3)),
        _req("b", 70, (1, 2, 3)),
        64,
    ),
    Case("shared first hash block only", _req("a", 96, (1, 2, 3)), _req("b", 96, (1, 9, 3)), 32),
    Case(
        "chained: a later equal hash after a difference never hits",
        _req("a", 96, (1, 2, 3)),
        _req("b", 96, (7, 2, 3)),
        0,
    ),
    Case(
        "longer second prompt hits the first's whole prompt blocks",
        _req("a", 64, (1, 2)),
        _req("b", 200, (1, 2, 5, 6, 7, 8, 9)),
        64,
    ),
    Case(
        "hash blocks not a multiple of the engine block: a block spanning two hash blocks needs both",
        _req("a", 72, (1, 2, 3), hb=24),
        _req("b", 72, (1, 2, 4), hb=24),
        48,
    ),
    Case("no prefix information: no hit", _req("a", 64, None), _req("b", 64, None), 0),
    Case("one side without prefix information: no hit", _req("a", 64, (1, 2)), _req("b", 64, None), 0),
    Case("prompt shorter than a block: nothing to cache", _req("a", 10, (1,)), _req("b", 10, (1,)), 0),
    Case(
        "token ids: shared leading 40 tokens give 2 full blocks",
        SimRequest("a", 50, 4, ignore_eos=True, prompt_token_ids=tuple(range(50))),
        SimRequest("b", 60, 4, ignore_eos=True, prompt_token_ids=(*range(40), *range(100, 120))),
        32,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("fast", [True, False])
def test_hit_tokens_table(case: Case, fast: bool) -> None:
    engine = make_engine(fast=fast)
    cached = _one_at_a_time(engine, [case.first, case.second])
    assert cached == {"a": 0, "b": case.expect_hit_tokens}
    snap = engine.snapshot()
    assert snap.prefix_cache_hits_tokens == case.expect_hit_tokens
    assert snap.prefix_cache_queries_tokens == case.first.prompt_tokens + case.second.prompt_tokens
    assert snap.kv_blocks_used == 0


def test_prefix_caching_off_counts_nothing_and_hits_nothing() -> None:
    engine = make_engine(prefix_caching=False)
    cached = _one_at_a_time(engine, [_req("a", 64, (1, 2)), _req("b", 64, (1, 2))])
    assert cached == {"a": 0, "b": 0}
    snap = engine.snapshot()
    assert (snap.prefix_cache_queries_tokens, snap.prefix_cache_hits_tokens) == (0, 0)


def test_a_hit_skips_prefill_compute() -> None:
    """The second identical prompt computes 16 tokens instead of 512: its TTFT (virtual) is shorter."""
    engine = make_engine()
    hashes = tuple(range(16))
    ttft: dict[str, float] = {}
    t = 0.0
    for rid in ("a", "b"):
        engine.submit(_req(rid, 512, hashes), t)
        for e in engine.advance_to(t + 100.0):
            if isinstance(e, Finished):
                ttft[rid] = float(e.token_times_s[0]) - e.arrival_s
        t += 100.0
    alone = make_engine(prefix_caching=False)
    alone.submit(SimRequest("c", 16, 4, ignore_eos=True), 0.0)
    (done,) = [e for e in alone.run_until_idle() if isinstance(e, Finished)]
    assert ttft["b"] < ttft["a"]
    # 16 new tokens with 496 of context cost at least what 16 tokens alone do
    assert ttft["b"] >= float(done.token_times_s[0])


def test_results_without_prefix_information_equal_prefix_caching_off() -> None:
    """Workloads without hashes run exactly as before prefix caching existed (bit for bit)."""
    from sloguard_testing.sim_engine import random_workload

    workload = random_workload(3, 150)
    on = finished_by_id(drive(make_engine(num_gpu_blocks=66), workload))
    off = finished_by_id(drive(make_engine(num_gpu_blocks=66, prefix_caching=False), workload))
    assert on.keys() == off.keys()
    assert any(e.num_preemptions for e in on.values())  # the small cache preempts: the harder case
    for rid, a in on.items():
        assert np.array_equal(a.token_times_s, off[rid].token_times_s)
        assert a.num_preemptions == off[rid].num_preemptions


def _prefix(hashes: tuple[int, ...], prompt: int, uid: int) -> SeqPrefix:
    return SeqPrefix(chain_hashes(hashes), BS, prompt, BS, uid)


def test_lru_evicts_least_recently_freed_first_and_tail_blocks_first() -> None:
    cache = PrefixCache(BS)
    a, b = _prefix((1, 2, 3), 49, 0), _prefix((7, 8, 9), 49, 1)  # 3 full blocks each + a partial one
    for p in (a, b):
        assert cache.lookup(p, 49, free_blocks=100) == (0, 0)
        cache.register(p, 49, free_blocks=100)
    free = 100 - 8
    free += cache.release(a, 4, 48, free)  # a freed first: its blocks are the oldest
    free += cache.release(b, 4, 48, free)
    assert free == 100
    assert list(cache.lru) == [
        a.key(2),
        a.key(1),
        a.key(0),
        b.key(2),
        b.key(1),
        b.key(0),
    ]
    # the free pool holds 94 never-named blocks: they go first; 96 allocated evict a's two deepest
    cache.evict_to(100 - 96)
    assert list(cache.lru) == [a.key(0), b.key(2), b.key(1), b.key(0)]
    assert cache.lookup(_prefix((1, 2, 3), 49, 2), 49, free_blocks=4) == (1, 1)
    assert cache.lookup(_prefix((7, 8, 9), 49, 3), 49, free_blocks=4) == (3, 3)


def test_a_hit_refreshes_a_block_in_the_lru() -> None:
    cache = PrefixCache(BS)
    a, b = _prefix((1, 2), 33, 0), _prefix((5, 6), 33, 1)
    free = 10
    for p in (a, b):
        cache.register(p, 33, free)
        free -= 3
    free += cache.release(a, 3, 32, free)
    free += cache.release(b, 3, 32, free)
    again = _prefix((1, 2), 33, 2)
    hit, free_hit = cache.lookup(again, 33, free)
    assert (hit, free_hit) == (2, 2)
    cache.touch(again, hit)
    free -= 1 + free_hit  # one new block for the tail, the two hit blocks leave the free pool
    free += cache.release(again, 3, 32, free)
    # a's blocks were used again after b's were freed: b's go first now
    assert list(cache.lru)[:2] == [b.key(1), b.key(0)]


def test_stats_skip_preempted_requests_as_vllm_does() -> None:
    engine = make_engine(num_gpu_blocks=12, max_model_len=160, max_num_seqs=4)  # 11 usable blocks
    hashes = (1, 2, 3, 4, 5)
    workload = [(0.0, _req("a", 80, hashes, out=80)), (0.0, _req("b", 80, hashes, out=80))]
    events = drive(engine, workload)
    done = finished_by_id(events)
    assert sum(e.num_preemptions for e in done.values()) >= 1
    snap = engine.snapshot()
    assert snap.prefix_cache_queries_tokens == 160  # each counted once, at its first admission
    assert snap.kv_blocks_used == 0


# ------------------------------------------------------------------------------------- invariants
PREFIXES = [(1, 2, 3, 4, 5, 6), (1, 2, 9, 10, 11, 12), (20, 21, 22, 23, 24, 25), (30, 31, 32, 33, 34, 35)]


@st.composite
def workloads(draw: st.DrawFn) -> list[tuple[float, SimRequest]]:
    n = draw(st.integers(1, 25))
    out = []
    t = 0.0
    for i in range(n):
        t += draw(st.floats(0.0, 0.3))
        prompt = draw(st.integers(1, 190))
        base = draw(st.sampled_from(PREFIXES))
        hashes = base[: -(-prompt // 32)] if draw(st.booleans()) or i % 3 else None
        out.append((t, _req(f"r{i}", prompt, hashes, out=draw(st.integers(1, 60)))))
    return out


def _check_invariants(engine: Engine) -> None:
    cache = engine.prefix_cache
    assert cache is not None
    free = engine.usable_blocks - engine.blocks_used
    cache.evict_to(free)  # settle lazy evictions, as the next allocation would
    holders: dict[int, int] = {}
    used = 0
    for seq in engine.running.values():
        assert seq.status == RUNNING
        held = seq.prefix.held if seq.prefix is not None else []
        assert len(set(held)) == len(held)
        for key in held:
            holders[key] = holders.get(key, 0) + 1
        used += seq.blocks - len(held)  # anonymous blocks are the request's own
    # a cached block is never free (in the LRU) while a running request references it
    for key, count in cache.ref.items():
        assert count == holders.get(key, 0)
        assert (key in cache.lru) == (count == 0)
    assert holders.keys() <= cache.ref.keys()
    used += len(holders)
    # free + used == total: the engine's used count is the distinct referenced blocks
    assert used == engine.blocks_used
    assert 0 <= engine.blocks_used <= engine.usable_blocks
    assert len(cache.lru) <= free


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workload=workloads(), blocks=st.integers(14, 60), policy=st.sampled_from(["fcfs", "priority"]))
def test_invariants_hold_after_every_step(
    workload: list[tuple[float, SimRequest]], blocks: int, policy: str
) -> None:
    engine = make_engine(fast=False, num_gpu_blocks=blocks, max_model_len=208, scheduling_policy=policy)
    cached: dict[str, int] = {}
    prompts = {r.request_id: r.prompt_tokens for _, r in workload}
    finished = 0

    def collect(events: list[EngineEvent]) -> None:
        nonlocal finished
        for e in events:
            if isinstance(e, FirstToken):
                cached.setdefault(e.request_id, e.cached_tokens)
            elif isinstance(e, Finished):
                finished += 1

    for t, req in workload:
        while (nxt := engine.next_event_time_s()) is not None and nxt <= t:
            collect(engine.advance_to(nxt))
            _check_invariants(engine)
        collect(engine.advance_to(t))
        engine.submit(req, t)
    while (nxt := engine.next_event_time_s()) is not None:
        collect(engine.advance_to(nxt))
        _check_invariants(engine)
    assert finished == len(workload)
    for rid, hit in cached.items():
        assert hit % BS == 0
        assert hit <= prompts[rid] - 1
    snap = engine.snapshot()
    assert snap.kv_blocks_used == 0
    assert snap.prefix_cache_hits_tokens <= snap.prefix_cache_queries_tokens
    assert engine.prefix_cache is not None and all(c == 0 for c in engine.prefix_cache.ref.values())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workload=workloads(), blocks=st.integers(14, 60))
def test_fast_path_matches_reference_stepping_with_prefix_hits(
    workload: list[tuple[float, SimRequest]], blocks: int
) -> None:
    fast_engine = make_engine(fast=True, num_gpu_blocks=blocks, max_model_len=208)
    slow_engine = make_engine(fast=False, num_gpu_blocks=blocks, max_model_len=208)
    fast, slow = finished_by_id(drive(fast_engine, workload)), finished_by_id(drive(slow_engine, workload))
    assert fast.keys() == slow.keys()
    for rid, a in fast.items():
        assert np.array_equal(a.token_times_s, slow[rid].token_times_s), rid
        assert a.num_preemptions == slow[rid].num_preemptions
    assert fast_engine.snapshot() == slow_engine.snapshot()
