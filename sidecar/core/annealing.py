"""Simulated annealing over a priority sequence and its batch grouping (arXiv 2504.14966, papers.md §4).

Called by the sa policy (sloguard.sidecar.core.policies.sa) on the head of its queue. The objective is
the paper's G = n_met / sum of latencies, where a request meets its SLO when its predicted TTFT, TPOT
and (if its class has one) end-to-end deadline are all met; a small constant is added to n_met so that
latency still separates plans in which nobody can meet the SLO. Groups run one after another (the
paper's batch-index model): a group's first tokens come after the prefill of its prompts, its decode
runs at ITL(group size, mean length) until its longest predicted output, then the next group starts.
Moves: swap two positions; squeeze (the first request of a group joins the previous one); delay (the
last request of a group moves to the next one). Metropolis acceptance on the relative change of G with
geometric cooling. The budget is an iteration count, never a clock, so the result is deterministic for
a given random generator. Pure.
"""

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from sloguard.sidecar.core.latency import LatencyModel

NOBODY_MEETS_WEIGHT = 0.01


@dataclass(frozen=True, slots=True)
class SaJob:
    arrival_s: float
    prompt_tokens: int
    output_tokens: float
    ttft_s: float
    tpot_s: float
    deadline_s: float | None


@dataclass(frozen=True, slots=True)
class Plan:
    order: tuple[int, ...]
    sizes: tuple[int, ...]
    objective: float
    met: int


def evaluate(
    jobs: Sequence[SaJob],
    order: Sequence[int],
    sizes: Sequence[int],
    *,
    now_s: float,
    running: int,
    latency: LatencyModel,
) -> tuple[float, int]:
    """(G, number predicted to meet their SLO) of executing `order` in groups of `sizes`."""
    t = now_s
    pos = 0
    met = 0
    total_latency = 0.0
    for g, size in enumerate(sizes):
        members = order[pos : pos + size]
        pos += size
        prompt_sum = 0
        out_sum = 0.0
        longest = 0.0
        for i in members:
            job = jobs[i]
            prompt_sum += job.prompt_tokens
            out_sum += job.output_tokens
            longest = max(longest, job.output_tokens)
        batch = size + (running if g == 0 else 0)
        itl = latency.itl_s(float(batch), (prompt_sum + out_sum / 2) / size)
        first = t + latency.prefill_s(float(prompt_sum))
        for i in members:
            job = jobs[i]
            ttft = first - job.arrival_s
            e2e = ttft + job.output_tokens * itl
            total_latency += e2e
            if ttft <= job.ttft_s and itl <= job.tpot_s and (job.deadline_s is None or e2e <= job.deadline_s):
                met += 1
        t = first + longest * itl
    if total_latency <= 0:
        return 0.0, met
    return (met + NOBODY_MEETS_WEIGHT) / total_latency, met


def anneal(  # noqa: PLR0912 (one loop, one branch per move kind)
    jobs: Sequence[SaJob],
    *,
    now_s: float,
    running: int,
    first_group_cap: int,
    group_cap: int,
    latency: LatencyModel,
    rng: random.Random,
    iterations: int,
    initial_temperature: float = 0.1,
    cooling: float = 0.97,
) -> Plan:
    """Best plan found from the given order (index order) in `iterations` moves."""
    n = len(jobs)
    if n == 0:
        return Plan((), (), 0.0, 0)
    if first_group_cap < 1 or group_cap < 1:
        raise ValueError("group capacities must be >= 1")
    order = list(range(n))
    sizes = [min(first_group_cap, n)]
    while sum(sizes) < n:
        sizes.append(min(group_cap, n - sum(sizes)))

    def cap(g: int) -> int:
        return first_group_cap if g == 0 else group_cap

    def score(o: Sequence[int], s: Sequence[int]) -> tuple[float, int]:
        return evaluate(jobs, o, s, now_s=now_s, running=running, latency=latency)

    current, met = score(order, sizes)
    best = Plan(tuple(order), tuple(sizes), current, met)
    temperature = initial_temperature
    for _ in range(iterations):
        new_order, new_sizes = order, sizes
        move = rng.random()
        if move < 0.5 and n >= 2:  # swap
            i, j = rng.randrange(n), rng.randrange(n)
            if i == j:
                continue
            new_order = order.copy()
            new_order[i], new_order[j] = new_order[j], new_order[i]
        elif move < 0.75 and len(sizes) >= 2:  # squeeze: first of group g joins group g-1
            g = rng.randrange(1, len(sizes))
            if sizes[g - 1] >= cap(g - 1):
                continue
            new_sizes = sizes.copy()
            new_sizes[g - 1] += 1
            new_sizes[g] -= 1
            if new_sizes[g] == 0:
                del new_sizes[g]
        else:  # delay: last of group g moves to group g+1
            g = rng.randrange(len(sizes))
            if sizes[g] <= 1 or (g + 1 < len(sizes) and sizes[g + 1] >= cap(g + 1)):
                continue
            new_sizes = sizes.copy()
            new_sizes[g] -= 1
            if g + 1 < len(new_sizes):
                new_sizes[g + 1] += 1
            else:
                new_sizes.append(1)
        candidate, candidate_met = score(new_order, new_sizes)
        delta = (candidate - current) / max(current, 1e-12)
        if delta >= 0 or rng.random() < math.exp(delta / max(temperature, 1e-12)):
            order, sizes, current = new_order, new_sizes, candidate
            if current > best.objective:
                best = Plan(tuple(order), tuple(sizes), current, candidate_met)
        temperature *= cooling
    return best
