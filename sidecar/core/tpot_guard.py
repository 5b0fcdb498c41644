"""TPOT guard: virtual-batch-size admission and SCORPIO's credit-based batching, as pure functions.

SCORPIO (reference/papers.md §1.5). `TpotState` holds the TPOT targets of the running requests; the
virtual batch size VBS = sum over running (and the candidate) of T_min / TPOT_i, where T_min is the
tightest target, counts each request by the fraction of decode iterations it must join. A candidate is
admitted while `ITL(VBS, L_avg) * eta < headroom * T_min` (and the KV cache has room, checked by the
caller). `credit_batch` is the engine-side half: which running requests decode in the next iteration;
the simulator's scheduler plug-in calls it, a sidecar in front of an unmodified vLLM cannot.
Pure; O(#distinct TPOT targets) per decision.
"""

import bisect
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sloguard.sidecar.core.latency import BatchLoad, LatencyModel


class TpotState:
    """Counter of running TPOT targets with O(1) minimum (SCORPIO's GlobalTPOTState)."""

    def __init__(self) -> None:
        self._counts: Counter[float] = Counter()
        self._distinct: list[float] = []

    def __len__(self) -> int:
        return sum(self._counts.values())

    def add(self, tpot_s: float) -> None:
        if self._counts[tpot_s] == 0:
            bisect.insort(self._distinct, tpot_s)
        self._counts[tpot_s] += 1

    def remove(self, tpot_s: float) -> None:
        if self._counts[tpot_s] <= 0:
            raise ValueError(f"TPOT target {tpot_s} is not running")
        self._counts[tpot_s] -= 1
        if self._counts[tpot_s] == 0:
            del self._counts[tpot_s]
            del self._distinct[bisect.bisect_left(self._distinct, tpot_s)]

    def min_tpot_s(self) -> float | None:
        return self._distinct[0] if self._distinct else None

    def virtual_batch_size(self, t_min_s: float) -> float:
        """Sum of T_min / TPOT_i over the running requests."""
        return sum(n * t_min_s / tpot for tpot, n in self._counts.items())


@dataclass(frozen=True, slots=True)
class TpotVerdict:
    admit: bool
    predicted_itl_s: float
    t_min_s: float
    batch_size: float


def tpot_admission(
    state: TpotState,
    latency: LatencyModel,
    *,
    running_len_tokens: float,
    candidate_tpot_s: float,
    candidate_prompt_tokens: float,
    candidate_output_tokens: float,
    eta: float,
    headroom: float = 0.99,
    virtual: bool = True,
    running_count: int | None = None,
    running_min_tpot_s: float | None = None,
) -> TpotVerdict:
    """Would the running batch still meet the tightest TPOT with the candidate in it?

    `virtual`: count the batch as VBS (the engine does credit batching); otherwise as the plain number
    of running requests plus one (an unmodified vLLM decodes every running request every iteration).
    `running_count`: requests running in the engine when some of them are not in `state` (their TPOT no
    longer constrains the gate, but they still decode every iteration); default `len(state)`.
    `running_min_tpot_s`: the tightest per-token budget of the running requests when the caller prices it
    otherwise than by their targets (`remaining_tpot_budget_s`); default `state.min_tpot_s()`.
    """
    running_min = state.min_tpot_s() if running_min_tpot_s is None else running_min_tpot_s
    t_min = candidate_tpot_s if running_min is None else min(running_min, candidate_tpot_s)
    n_running = len(state) if running_count is None else running_count
    if n_running < len(state):
        raise ValueError(f"running_count {n_running} is below the {len(state)} targets in the state")
    unconstrained = float(n_running - len(state))  # decode every iteration whatever credit they have
    if virtual:
        batch = state.virtual_batch_size(t_min) + unconstrained + t_min / candidate_tpot_s
    else:
        batch = float(n_running + 1)
    load = BatchLoad(batch_size=float(n_running), total_len_tokens=running_len_tokens)
    itl = latency.tpot_if_joins_s(
        load,
        candidate_prompt_tokens=candidate_prompt_tokens,
        candidate_output_tokens=candidate_output_tokens,
        candidate_weight=batch - n_running,
    )
    return TpotVerdict(
        admit=itl * eta < headroom * t_min, predicted_itl_s=itl, t_min_s=t_min, batch_size=batch
    )


def remaining_tpot_budget_s(
    *, tpot_s: float, first_token_s: float, last_tokens_s: float, output_tokens: int, expected_tokens: float
) -> float:
    """The mean time per token a running request can still afford and meet its TPOT target (a mean over
    its output after the first token), if it ends at `expected_tokens`: its whole budget
    `tpot_s * (expected - 1)` less the time its reported tokens took (`output_tokens` by `last_tokens_s`),
    over the tokens still to come. Prefill stalls it already sat through show up as a budget below the
    target; a request ahead of its pace has one above it. Past `expected_tokens` the rest is taken as one
    token. Negative or 0: the request misses its TPOT whatever comes next."""
    total = max(float(output_tokens) + 1.0, expected_tokens)
    spent_s = max(0.0, last_tokens_s - first_token_s)
    return (tpot_s * (total - 1.0) - spent_s) / (total - float(output_tokens))


@dataclass(frozen=True, slots=True)
class RunningDecode:
    """A running request as the credit scheduler sees it."""

    request_id: str
    tpot_s: float
    credit: float = 0.0


def credit_batch(running: Sequence[RunningDecode]) -> tuple[list[str], list[RunningDecode]]:
    """One decode iteration of SCORPIO's credit-based batching.

    Requests at the tightest TPOT decode every iteration; a request with a looser target earns
    T_min / TPOT per iteration and decodes when its credit reaches 1 (spending 1). Returns the ids that
    decode this iteration and every request with its updated credit, in the input order.
    """
    if not running:
        return [], []
    t_min = min(r.tpot_s for r in running)
    scheduled: list[str] = []
    updated: list[RunningDecode] = []
    for r in running:
        if r.tpot_s <= 0:
            raise ValueError(f"TPOT of {r.request_id!r} must be > 0, got {r.tpot_s}")
        if r.tpot_s == t_min:
            scheduled.append(r.request_id)
            updated.append(r)
            continue
        credit = r.credit + t_min / r.tpot_s
        if credit >= 1.0:
            credit -= 1.0
            scheduled.append(r.request_id)
        updated.append(RunningDecode(r.request_id, r.tpot_s, credit))
    return scheduled, updated
