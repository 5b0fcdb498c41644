"""The real-vLLM benchmark's workload and scoring: pure functions over plain data, no I/O, no clock.

Used by bench/real_vllm.py (which runs the load and owns every process) and by its unit tests.

Workload. Arrivals are the Azure LLM inference 2023 conversation trace's (Splitwise, ISCA'24), replayed
from a chosen offset with its gaps multiplied by `trace mean rate / target rate`, so its burst shape is
kept at any mean rate. Each request's lengths are the trace row's own, scaled to the tiny model's 512
positions (`prompt = ContextTokens / PROMPT_DIVISOR`, `output = GeneratedTokens / OUTPUT_DIVISOR`, each
clamped); prompts are exact-length token-id lists and every request is sent with `ignore_eos`, so the engine
generates exactly `output_tokens`. Classes are drawn with a seeded generator from CLASS_WEIGHTS.

Class targets are multiples of the engine's measured single-request TTFT and inter-token time
(`class_targets`); the defaults are the multiples of issue 16's measurement (TTFT 13x / 65x / 650x,
TPOT 5x / 10x / 25x).

Scoring. A request is good when it completed and its TTFT and TPOT are within its class; goodput is good
requests per second of the run's arrival window. Every run is checked to account for each request once:
requests = completed + rejected + failed (a request still unfinished when the run is cut off is failed).
"""

import math
import random
import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

CLASS_WEIGHTS: dict[str, float] = {"interactive": 0.4, "standard": 0.4, "batch": 0.2}
TTFT_MULTIPLES: dict[str, float] = {"interactive": 13.0, "standard": 65.0, "batch": 650.0}
TPOT_MULTIPLES: dict[str, float] = {"interactive": 5.0, "standard": 10.0, "batch": 25.0}
PROMPT_DIVISOR = 8
OUTPUT_DIVISOR = 4
PROMPT_TOKENS_RANGE = (8, 256)
OUTPUT_TOKENS_RANGE = (4, 128)
VOCAB = (3, 511)  # token ids the prompts draw from (0-2 are <unk>, <s>, </s>)


@dataclass(frozen=True, slots=True)
class TraceRow:
    arrival_s: float  # seconds after the trace's first request
    context_tokens: int
    generated_tokens: int


@dataclass(frozen=True, slots=True)
class ClassTarget:
    name: str
    ttft_s: float
    tpot_s: float


@dataclass(frozen=True, slots=True)
class BenchRequest:
    index: int
    arrival_s: float  # seconds after the run's start
    slo_class: str
    prompt_token_ids: tuple[int, ...]
    output_tokens: int


def class_targets(
    single_ttft_s: float,
    single_itl_s: float,
    ttft_multiples: Mapping[str, float] = TTFT_MULTIPLES,
    tpot_multiples: Mapping[str, float] = TPOT_MULTIPLES,
) -> list[ClassTarget]:
    """The three classes' targets as multiples of the engine's single-request TTFT and ITL."""
    if not (single_ttft_s > 0 and single_itl_s > 0 and math.isfinite(single_ttft_s + single_itl_s)):
        raise ValueError(f"calibration must be positive and finite, got {single_ttft_s}, {single_itl_s}")
    return [
        ClassTarget(name, ttft_multiples[name] * single_ttft_s, tpot_multiples[name] * single_itl_s)
        for name in ttft_multiples
    ]


def trace_mean_rate_rps(rows: Sequence[TraceRow]) -> float:
    if len(rows) < 2 or rows[-1].arrival_s <= rows[0].arrival_s:
        raise ValueError("the trace needs at least two rows spread over time")
    return (len(rows) - 1) / (rows[-1].arrival_s - rows[0].arrival_s)


def _clamp(value: int, bounds: tuple[int, int]) -> int:
    return min(bounds[1], max(bounds[0], value))


def build_requests(
    rows: Sequence[TraceRow],
    *,
    rate_rps: float,
    duration_s: float,
    offset_index: int,
    seed: int,
    weights: Mapping[str, float] = CLASS_WEIGHTS,
) -> list[BenchRequest]:
    """The requests arriving in `duration_s` seconds at mean `rate_rps`, replaying the trace from row
    `offset_index` (wrapping around) with its gaps scaled; deterministic for the arguments."""
    rng = random.Random(seed)
    names, class_weights = list(weights), list(weights.values())
    out: list[BenchRequest] = []
    for t_s, row in _window(rows, rate_rps=rate_rps, duration_s=duration_s, offset_index=offset_index):
        out.append(
            BenchRequest(
                index=len(out),
                arrival_s=t_s,
                slo_class=rng.choices(names, class_weights)[0],
                prompt_token_ids=tuple(
                    rng.randint(*VOCAB)
                    for _ in range(_clamp(row.context_tokens // PROMPT_DIVISOR, PROMPT_TOKENS_RANGE))
                ),
                output_tokens=_clamp(row.generated_tokens // OUTPUT_DIVISOR, OUTPUT_TOKENS_RANGE),
            )
        )
    return out


def with_fresh_tokens(requests: Sequence[BenchRequest], seed: int) -> list[BenchRequest]:
    """The same requests (arrivals, classes, prompt and output lengths) with prompt token ids drawn anew.

    The arms of a round replay one window; with the same token ids, every arm after the first would find
    the earlier arms' prompts in vLLM's prefix cache (on by default, as deployed) and prefill only the
    partial last block, so the arm order, not the arm, would set part of the result."""
    rng = random.Random(seed)
    return [
        replace(r, prompt_token_ids=tuple(rng.randint(*VOCAB) for _ in r.prompt_token_ids)) for r in requests
    ]


def _window(
    rows: Sequence[TraceRow], *, rate_rps: float, duration_s: float, offset_index: int
) -> Iterator[tuple[float, TraceRow]]:
    """(arrival second, row) of the trace replayed from `offset_index` (wrapping) with its gaps scaled to
    `rate_rps`, for `duration_s` seconds; the first arrives at 0."""
    if not rate_rps > 0 or not duration_s > 0:
        raise ValueError(f"rate_rps and duration_s must be > 0, got {rate_rps}, {duration_s}")
    if not rows:
        raise ValueError("empty trace")
    mean_rps = trace_mean_rate_rps(rows)
    scale = mean_rps / rate_rps
    t_s = 0.0
    n = len(rows)
    i = offset_index % n
    while True:
        row = rows[i]
        yield t_s, row
        nxt = (i + 1) % n
        gap_s = rows[nxt].arrival_s - row.arrival_s if nxt else 1.0 / mean_rps
        t_s += max(0.0, gap_s) * scale
        if t_s >= duration_s:
            return
        i = nxt


def window_arrivals(
    rows: Sequence[TraceRow], *, rate_rps: float, duration_s: float, offset_index: int
) -> int:
    """How many requests `build_requests` makes for these arguments (without making them)."""
    return sum(1 for _ in _window(rows, rate_rps=rate_rps, duration_s=duration_s, offset_index=offset_index))


def mean_rate_offsets(
    rows: Sequence[TraceRow], *, rate_rps: float, duration_s: float, candidates: Sequence[int], count: int
) -> list[int]:
    """The `count` candidate offsets whose windows offer closest to `rate_rps * duration_s` requests, closest
    first (candidate order among equals): the windows a knee-sweep point replays, each offering its nominal
    rate, so that the point's goodput is a median over several burst shapes instead of one."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if len(set(candidates)) < count:
        raise ValueError(f"{count} windows wanted, {len(set(candidates))} distinct candidate offsets")
    want = rate_rps * duration_s
    ranked = sorted(
        dict.fromkeys(candidates),
        key=lambda offset: abs(
            window_arrivals(rows, rate_rps=rate_rps, duration_s=duration_s, offset_index=offset) - want
        ),
    )
    return ranked[:count]


def run_length_s(targets: Sequence[ClassTarget], *, floor_s: float, loosest_ttft_multiple: float) -> float:
    """Seconds per measured run: at least `floor_s` and at least `loosest_ttft_multiple` times the loosest
    class's TTFT target. Past the knee vLLM's own queue makes each request wait longer the later it
    arrives, so a class whose TTFT target is a large part of the run is met through the run's first seconds
    whatever the load: a run a few loose targets long measures the start of an overload, not the overload
    (measured on an AMD EPYC host at 2x the knee, batch TTFT 5.7 s: direct met every batch request of the
    first 12 s of a 15 s run and served 38 req/s good; in 30 s runs, 10 req/s)."""
    if not targets:
        raise ValueError("no class targets")
    if not (floor_s > 0 and loosest_ttft_multiple >= 0):
        raise ValueError(f"floor_s must be > 0 and the multiple >= 0, got {floor_s}, {loosest_ttft_multiple}")
    return max(floor_s, loosest_ttft_multiple * max(t.ttft_s for t in targets))


@dataclass(slots=True)
class Outcome:
    """What the client saw of one request; times in seconds after the run's start."""

    slo_class: str
    sent_s: float
    outcome: str = "failed"  # completed, rejected or failed
    first_token_s: float | None = None
    last_token_s: float | None = None
    output_tokens: int = 0
    reason: str = ""
    scheduled_s: float | None = None  # when the workload meant to send it (None: as sent)
    rejected_queued: bool = False  # rejected after the sidecar admitted and queued it, not at arrival
    rejected_gate_held: bool = False  # of those, held back by the TPOT gate before it was given up

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.sent_s

    @property
    def ttft_from_schedule_s(self) -> float | None:
        """TTFT from the scheduled arrival: what an on-time client saw (the load generator's own lag
        behind the schedule, which `ttft_s` leaves out, included; no coordinated omission)."""
        if self.first_token_s is None:
            return None
        start_s = self.sent_s if self.scheduled_s is None else min(self.sent_s, self.scheduled_s)
        return self.first_token_s - start_s

    @property
    def tpot_s(self) -> float | None:
        if self.first_token_s is None or self.last_token_s is None or self.output_tokens < 2:
            return None
        return (self.last_token_s - self.first_token_s) / (self.output_tokens - 1)

    def good(self, target: ClassTarget, *, from_schedule: bool = False) -> bool:
        ttft, tpot = (self.ttft_from_schedule_s if from_schedule else self.ttft_s), self.tpot_s
        return (
            self.outcome == "completed"
            and ttft is not None
            and ttft <= target.ttft_s
            and (tpot is None or tpot <= target.tpot_s)
        )


@dataclass(frozen=True)
class RunScore:
    requests: int
    completed: int
    rejected: int
    failed: int
    good: int
    goodput_rps: float
    attainment: float
    tokens: int  # completion tokens the client received
    ttft_p50_s: float | None
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    goodput_from_schedule_rps: float = 0.0  # good with TTFT counted from the scheduled arrival


def score_run(outcomes: Sequence[Outcome], targets: Sequence[ClassTarget], duration_s: float) -> RunScore:
    """Goodput, attainment and outcome counts of one run; raises if an outcome is not one of the three."""
    by_name = {t.name: t for t in targets}
    counts = {"completed": 0, "rejected": 0, "failed": 0}
    for o in outcomes:
        if o.outcome not in counts:
            raise ValueError(f"unknown outcome {o.outcome!r}")
        counts[o.outcome] += 1
    if sum(counts.values()) != len(outcomes):
        raise AssertionError("requests != completed + rejected + failed")
    good = [o.good(by_name[o.slo_class]) for o in outcomes]
    ttfts = sorted(t for o in outcomes if o.outcome == "completed" and (t := o.ttft_s) is not None)
    per_class: dict[str, dict[str, float]] = {}
    for name, target in by_name.items():
        mine = [(o, g) for o, g in zip(outcomes, good, strict=True) if o.slo_class == name]
        n_good = sum(g for _, g in mine)
        completed = [o for o, _ in mine if o.outcome == "completed"]
        late_ttft = [o.ttft_s is None or o.ttft_s > target.ttft_s for o in completed]
        per_class[name] = {
            "requests": len(mine),
            "good": n_good,
            "goodput_rps": n_good / duration_s,
            "attainment": n_good / len(mine) if mine else 0.0,
            "rejected": sum(o.outcome == "rejected" for o, _ in mine),
            # of those, given up after the sidecar admitted and queued them (the rest refused at arrival)
            "rejected_queued": sum(o.outcome == "rejected" and o.rejected_queued for o, _ in mine),
            # of those, held back by the sidecar's TPOT gate (the rest waited for the queue ahead)
            "rejected_gate_held": sum(o.outcome == "rejected" and o.rejected_gate_held for o, _ in mine),
            "failed": sum(o.outcome == "failed" for o, _ in mine),
            # why a completed request was not good: TTFT late first, else TPOT late
            "late_ttft": sum(late_ttft),
            "late_tpot": sum(
                not late and (t := o.tpot_s) is not None and t > target.tpot_s
                for o, late in zip(completed, late_ttft, strict=True)
            ),
        }
    return RunScore(
        requests=len(outcomes),
        completed=counts["completed"],
        rejected=counts["rejected"],
        failed=counts["failed"],
        good=sum(good),
        goodput_rps=sum(good) / duration_s,
        attainment=sum(good) / len(outcomes) if outcomes else 0.0,
        tokens=sum(o.output_tokens for o in outcomes),
        ttft_p50_s=statistics.median(ttfts) if ttfts else None,
        per_class=per_class,
        goodput_from_schedule_rps=sum(o.good(by_name[o.slo_class], from_schedule=True) for o in outcomes)
        / duration_s,
    )


def knee_rate(sweep: Sequence[tuple[float, float]], *, min_gain: float = 1.05, patience: int = 2) -> float:
    """The rate past which goodput stops rising and starts to fall: the end of the plateau that follows
    the rise (`plateau_end_rate` from `rise_end_rate`). Where goodput climbs to a peak and falls, that is
    the peak; where it stays within `min_gain` of the peak for some higher rates, the highest of them
    before the first fall, the rate the engine still sustains. The rise's end alone would put the knee at
    the plateau's start, where a tight class's goodput saturates while vLLM still keeps up with the rest:
    on the AMD EPYC host direct's goodput stayed within 5 % from 64 to 128 req/s, and at 128 req/s (2x
    the plateau's start) direct completed every request it was offered, with no queue growing without
    bound, which is what the load points past the knee are for."""
    return plateau_end_rate(
        sweep, rise_end_rate(sweep, min_gain=min_gain, patience=patience), min_gain=min_gain
    )


def rise_end_rate(
    sweep: Sequence[tuple[float, float]], *, min_gain: float = 1.05, patience: int = 2
) -> float:
    """The rate past which goodput stops rising: walking (rate, goodput) pairs in rate order, the rate of
    the best goodput once `patience` higher rates in a row failed to beat it by `min_gain` (one noisy
    point on a shared machine does not end the rise)."""
    if not sweep:
        raise ValueError("empty sweep")
    ordered = sorted(sweep)
    best_rate, best = ordered[0]
    misses = 0
    for rate, goodput in ordered[1:]:
        if goodput >= best * min_gain:
            best_rate, best, misses = rate, goodput, 0
        else:
            misses += 1
            if misses >= patience:
                break
    return best_rate


def plateau_end_rate(
    sweep: Sequence[tuple[float, float]], rise_end_rps: float, *, min_gain: float = 1.05
) -> float:
    """The highest swept rate from `rise_end_rps` (`rise_end_rate`) up, before the first one whose goodput
    falls below that rate's by more than `min_gain` allows (`rise_end_rps` itself when none is within it): how
    far a plateau of goodput reaches past the rise."""
    ordered = sorted(sweep)
    at_rise_end = [g for r, g in ordered if r == rise_end_rps]
    if not at_rise_end:
        raise ValueError(f"the rise's end {rise_end_rps} is not a swept rate")
    end = rise_end_rps
    for rate, goodput in ordered:
        if rate <= rise_end_rps:
            continue
        if goodput * min_gain < at_rise_end[0]:
            break
        end = rate
    return end


def sweep_done(sweep: Sequence[tuple[float, float]], *, min_gain: float = 1.05, patience: int = 2) -> bool:
    """Whether the last `patience` rates of a rising sweep all failed to beat the best before them."""
    ordered = sorted(sweep)
    if len(ordered) <= patience:
        return False
    best = max(g for _, g in ordered[:-patience])
    return all(g < best * min_gain for _, g in ordered[-patience:])


def median_min_max(values: Sequence[float]) -> tuple[float, float, float]:
    if not values:
        return (math.nan, math.nan, math.nan)
    return float(statistics.median(values)), float(min(values)), float(max(values))


def rotated(arms: Sequence[str], round_index: int) -> list[str]:
    """The arms' order in a round: shifted by one each round, so no arm always runs first or last."""
    shift = round_index % len(arms)
    return [*arms[shift:], *arms[:shift]]
