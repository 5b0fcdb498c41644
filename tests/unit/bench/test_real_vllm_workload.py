"""The real-vLLM benchmark's pure parts: workload replay, class targets, scoring, the knee, rotation."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sloguard.bench import SCENARIOS
from sloguard.bench.real_vllm import ARMS, parse_prefix_cache_counters, sidecar_config, vllm_command
from sloguard.bench.real_vllm_workload import (
    OUTPUT_TOKENS_RANGE,
    PROMPT_TOKENS_RANGE,
    ClassTarget,
    Outcome,
    TraceRow,
    build_requests,
    class_targets,
    knee_rate,
    mean_rate_offsets,
    median_min_max,
    plateau_end_rate,
    rise_end_rate,
    rotated,
    run_length_s,
    score_run,
    sweep_done,
    trace_mean_rate_rps,
    window_arrivals,
    with_fresh_tokens,
)

# a bursty toy trace: two near-simultaneous arrivals, then a long gap
TRACE = [
    TraceRow(t, 800 + 8 * i, 40 + 4 * i) for i, t in enumerate([0.0, 0.01, 1.0, 1.02, 2.0, 3.5, 3.51, 4.0])
]
TARGETS = [ClassTarget("interactive", 0.2, 0.02), ClassTarget("batch", 9.0, 0.1)]


def test_the_scenario_is_registered() -> None:
    assert SCENARIOS["real-vllm"] == "sloguard.bench.real_vllm"


def test_class_targets_are_the_issue_multiples() -> None:
    targets = {t.name: t for t in class_targets(0.014, 0.004)}
    assert targets["interactive"].ttft_s == pytest.approx(13 * 0.014)
    assert targets["standard"].ttft_s == pytest.approx(65 * 0.014)
    assert targets["batch"].ttft_s == pytest.approx(650 * 0.014)
    assert [targets[n].tpot_s for n in ("interactive", "standard", "batch")] == pytest.approx(
        [0.02, 0.04, 0.1]
    )


@pytest.mark.parametrize(("ttft", "itl"), [(0.0, 0.01), (0.01, -1.0), (math.nan, 0.01), (0.01, math.inf)])
def test_class_targets_refuse_bad_calibration(ttft: float, itl: float) -> None:
    with pytest.raises(ValueError, match="calibration"):
        class_targets(ttft, itl)


@settings(deadline=None, max_examples=50)
@given(rate=st.floats(0.5, 50.0), duration=st.floats(0.5, 5.0), offset=st.integers(0, 1000))
def test_replay_keeps_the_rate_and_shape(rate: float, duration: float, offset: int) -> None:
    requests = build_requests(TRACE, rate_rps=rate, duration_s=duration, offset_index=offset, seed=1)
    arrivals = [r.arrival_s for r in requests]
    assert arrivals == sorted(arrivals)
    assert arrivals[0] == 0.0
    assert all(a < duration for a in arrivals)
    for r in requests:
        assert PROMPT_TOKENS_RANGE[0] <= len(r.prompt_token_ids) <= PROMPT_TOKENS_RANGE[1]
        assert OUTPUT_TOKENS_RANGE[0] <= r.output_tokens <= OUTPUT_TOKENS_RANGE[1]
        assert all(3 <= t <= 511 for t in r.prompt_token_ids)


def test_replay_scales_gaps_and_keeps_bursts() -> None:
    mean = trace_mean_rate_rps(TRACE)
    requests = build_requests(TRACE, rate_rps=2 * mean, duration_s=2.0, offset_index=0, seed=0)
    # the trace's gaps halved: 0, 0.005, 0.5, 0.51, 1.0, 1.75, 1.755
    assert [round(r.arrival_s, 4) for r in requests] == [0.0, 0.005, 0.5, 0.51, 1.0, 1.75, 1.755]
    again = build_requests(TRACE, rate_rps=2 * mean, duration_s=2.0, offset_index=0, seed=0)
    assert again == requests


def test_each_arm_gets_the_same_window_with_its_own_prompt_tokens() -> None:
    """The arms of a round share arrivals, classes and lengths, never prompts: vLLM's prefix cache would
    serve a later arm the earlier arms' prefills."""
    requests = build_requests(TRACE, rate_rps=4.0, duration_s=2.0, offset_index=0, seed=0)
    arms = [with_fresh_tokens(requests, seed) for seed in (1, 2)]
    for fresh in arms:
        assert [(r.index, r.arrival_s, r.slo_class, r.output_tokens) for r in fresh] == [
            (r.index, r.arrival_s, r.slo_class, r.output_tokens) for r in requests
        ]
        assert [len(r.prompt_token_ids) for r in fresh] == [len(r.prompt_token_ids) for r in requests]
        assert all(3 <= t <= 511 for r in fresh for t in r.prompt_token_ids)
    first_blocks = [{r.prompt_token_ids[:8] for r in fresh} for fresh in (requests, *arms)]
    assert not first_blocks[0] & first_blocks[1] and not first_blocks[1] & first_blocks[2]
    assert with_fresh_tokens(requests, 1) == arms[0]  # deterministic


def test_prefix_cache_counters_are_summed_over_label_sets() -> None:
    text = """# HELP vllm:prefix_cache_queries_total Prefix cache queries, in queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="tiny"} 1000.0
vllm:prefix_cache_queries_total{engine="1",model_name="tiny"} 24.0
vllm:prefix_cache_hits_total{engine="0",model_name="tiny"} 256.0
vllm:external_prefix_cache_hits_total{engine="0",model_name="tiny"} 99.0
vllm:num_requests_running{engine="0",model_name="tiny"} 0.0
"""
    assert parse_prefix_cache_counters(text) == (1024.0, 256.0)
    assert parse_prefix_cache_counters("vllm:num_requests_running 0.0\n") is None


def test_replay_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        build_requests(TRACE, rate_rps=0.0, duration_s=1.0, offset_index=0, seed=0)
    with pytest.raises(ValueError):
        build_requests([], rate_rps=1.0, duration_s=1.0, offset_index=0, seed=0)


@settings(deadline=None, max_examples=50)
@given(rate=st.floats(0.5, 50.0), duration=st.floats(0.5, 5.0), offset=st.integers(0, 1000))
def test_window_arrivals_counts_what_the_replay_makes(rate: float, duration: float, offset: int) -> None:
    requests = build_requests(TRACE, rate_rps=rate, duration_s=duration, offset_index=offset, seed=1)
    assert window_arrivals(TRACE, rate_rps=rate, duration_s=duration, offset_index=offset) == len(requests)


def test_the_sweep_window_offers_its_nominal_rate() -> None:
    mean = trace_mean_rate_rps(TRACE)  # 7 gaps over 4 s: 1.75 req/s, so a 1.2 s window should hold 2.1
    # from row 0: 0, 0.01, 1.0, 1.02; from row 3: 1.02, 2.0; from row 4: 2.0 alone; from 7: 4.0, then
    # the wrap (one mean gap, 0.57 s) to rows 0 and 1
    counts = {o: window_arrivals(TRACE, rate_rps=mean, duration_s=1.2, offset_index=o) for o in (0, 3, 4, 7)}
    assert counts == {0: 4, 3: 2, 4: 1, 7: 3}

    def offsets(candidates: tuple[int, ...], count: int) -> list[int]:
        return mean_rate_offsets(TRACE, rate_rps=mean, duration_s=1.2, candidates=candidates, count=count)

    assert offsets((0, 3, 4, 7), 1) == [3]
    assert offsets((7, 1), 1) == [7]  # first of equals
    # several windows for one sweep point: closest to 2.1 arrivals first (3: 2, 7: 3, 4: 1, 0: 4), never
    # one window twice
    assert offsets((0, 3, 4, 7), 3) == [3, 7, 4]
    assert offsets((3, 3, 4), 2) == [3, 4]
    with pytest.raises(ValueError, match="candidate"):
        offsets((), 1)
    with pytest.raises(ValueError, match="distinct candidate"):
        offsets((3, 3), 2)
    with pytest.raises(ValueError, match="count"):
        offsets((0, 3), 0)


@pytest.mark.parametrize(
    ("floor_s", "multiple", "expected_s"),
    [(15.0, 5.0, 45.0), (60.0, 5.0, 60.0), (15.0, 0.0, 15.0), (15.0, 1.0, 15.0)],
)
def test_runs_last_several_loosest_ttft_targets(floor_s: float, multiple: float, expected_s: float) -> None:
    # the loosest class here is batch, 9 s
    assert run_length_s(TARGETS, floor_s=floor_s, loosest_ttft_multiple=multiple) == expected_s


def test_run_length_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        run_length_s([], floor_s=15.0, loosest_ttft_multiple=5.0)
    with pytest.raises(ValueError):
        run_length_s(TARGETS, floor_s=0.0, loosest_ttft_multiple=5.0)
    with pytest.raises(ValueError):
        run_length_s(TARGETS, floor_s=15.0, loosest_ttft_multiple=-1.0)


def _outcome(
    cls: str, outcome: str, ttft: float | None = None, tpot: float = 0.01, tokens: int = 11
) -> Outcome:
    o = Outcome(slo_class=cls, sent_s=1.0, outcome=outcome)
    if ttft is not None:
        o.first_token_s = 1.0 + ttft
        o.last_token_s = o.first_token_s + tpot * (tokens - 1)
        o.output_tokens = tokens
    return o


def test_score_counts_good_only_within_both_targets() -> None:
    outcomes = [
        _outcome("interactive", "completed", ttft=0.1),  # good
        _outcome("interactive", "completed", ttft=0.3),  # TTFT missed
        _outcome("interactive", "completed", ttft=0.1, tpot=0.05),  # TPOT missed
        _outcome("batch", "completed", ttft=5.0, tpot=0.05),  # good
        _outcome("batch", "rejected"),
        _outcome("batch", "failed", ttft=0.1),  # cut off mid-stream: not good
    ]
    score = score_run(outcomes, TARGETS, duration_s=2.0)
    assert (score.requests, score.completed, score.rejected, score.failed) == (6, 4, 1, 1)
    assert score.good == 2
    assert score.goodput_rps == 1.0
    assert score.attainment == pytest.approx(2 / 6)
    assert score.per_class["interactive"]["good"] == 1
    assert score.per_class["batch"]["rejected"] == 1
    interactive, batch = score.per_class["interactive"], score.per_class["batch"]
    assert (interactive["late_ttft"], interactive["late_tpot"], interactive["failed"]) == (1, 1, 0)
    assert (batch["late_ttft"], batch["late_tpot"], batch["failed"]) == (0, 0, 1)


def test_a_request_late_on_both_targets_counts_as_late_ttft_only() -> None:
    score = score_run([_outcome("interactive", "completed", ttft=0.3, tpot=0.05)], TARGETS, duration_s=1.0)
    interactive = score.per_class["interactive"]
    assert (interactive["late_ttft"], interactive["late_tpot"]) == (1, 0)


def test_score_refuses_an_unknown_outcome() -> None:
    with pytest.raises(ValueError, match="unknown outcome"):
        score_run([_outcome("batch", "cancelled")], TARGETS, duration_s=1.0)


@pytest.mark.parametrize(
    ("sweep", "knee", "done"),
    [
        ([(8, 7.5), (16, 15.0), (32, 20.0), (64, 6.0), (128, 3.0)], 32, True),
        ([(8, 7.5), (16, 7.6), (32, 7.0)], 8, True),  # no gain past the first rate
        ([(8, 7.5)], 8, False),
        ([(32, 20.0), (8, 7.5), (16, 15.0)], 32, False),  # order does not matter; still rising
        ([(8, 2.0), (16, 15.0), (32, 14.0), (64, 30.0)], 64, False),  # one noisy point does not end it
        ([(8, 7.5), (16, 15.0), (32, 14.0), (64, 14.5)], 16, True),
    ],
)
def test_the_rise_ends_where_goodput_stops_rising(
    sweep: list[tuple[float, float]], knee: float, done: bool
) -> None:
    assert rise_end_rate(sweep) == knee
    assert sweep_done(sweep) is done


RUN_7_SWEEP = [
    (8.0, 7.8),
    (16.0, 16.2),
    (32.0, 31.8),
    (64.0, 63.3),
    (128.0, 65.8),
    (256.0, 27.5),
    (96.0, 63.9),
]
RUN_4_SWEEP = [
    (8.0, 7.9),
    (16.0, 16.1),
    (32.0, 31.5),
    (64.0, 64.3),
    (128.0, 87.6),
    (256.0, 45.8),
    (192.0, 46.1),
]


@pytest.mark.parametrize(
    ("sweep", "rise_end", "knee"),
    [
        (RUN_7_SWEEP, 64.0, 128.0),  # within 5 % up to 128, collapsed at 256: the knee is the plateau's end
        (RUN_4_SWEEP, 128.0, 128.0),  # the next rate fell by half: no plateau, the knee is the peak
        ([(64.0, 64.0), (96.0, 65.1), (128.0, 28.8), (256.0, 33.3)], 64.0, 96.0),  # ends at the first fall
        ([(64.0, 64.0), (96.0, 62.0), (128.0, 60.0), (256.0, 64.0)], 64.0, 96.0),  # no return past a fall
        ([(8.0, 8.0), (16.0, 16.0)], 16.0, 16.0),  # the sweep's last rate
        ([(8.0, 7.5), (16.0, 7.6), (32.0, 7.0)], 8.0, 16.0),  # flat from the start, then a fall
    ],
)
def test_the_knee_is_where_goodput_stops_rising_and_starts_to_fall(
    sweep: list[tuple[float, float]], rise_end: float, knee: float
) -> None:
    assert rise_end_rate(sweep) == rise_end
    assert plateau_end_rate(sweep, rise_end) == knee
    assert knee_rate(sweep) == knee


def test_the_plateau_starts_at_a_swept_rate() -> None:
    with pytest.raises(ValueError, match="not a swept rate"):
        plateau_end_rate(RUN_7_SWEEP, 100.0)


def test_rotation_puts_every_arm_first_once_in_three_rounds() -> None:
    firsts = [rotated(ARMS, r)[0] for r in range(3)]
    assert sorted(firsts) == sorted(ARMS)
    assert all(sorted(rotated(ARMS, r)) == sorted(ARMS) for r in range(5))


def test_median_min_max() -> None:
    assert median_min_max([3.0, 1.0, 2.0]) == (2.0, 1.0, 3.0)
    assert all(math.isnan(v) for v in median_min_max([]))


def test_engine_runs_compiled_and_sidecars_are_configured_as_the_issue_says() -> None:
    from pathlib import Path

    command = vllm_command(Path("python"), Path("model"), 8000)
    assert "--enforce-eager" not in command
    assert command[command.index("--scheduling-policy") + 1] == "priority"
    targets = class_targets(0.014, 0.004)
    s = sidecar_config("sloguard", targets, "http://127.0.0.1:1")
    assert s["policy"] == {"name": "sloguard", "parameters": {"calibrate_decode": True}}
    assert s["limits"]["min_in_flight"] == s["limits"]["max_in_flight"] == 128
    f = sidecar_config("fcfs_sidecar", targets, "http://127.0.0.1:1")
    assert f["policy"]["name"] == "fcfs"
    with pytest.raises(ValueError):
        sidecar_config("direct", targets, "http://127.0.0.1:1")


@pytest.mark.parametrize(
    ("scheduled_s", "good_as_sent", "good_from_schedule"),
    [
        (None, 1.0, 1.0),  # no schedule: both the same
        (1.0, 1.0, 1.0),  # sent on time
        (0.95, 1.0, 1.0),  # 50 ms late: still within the 200 ms target
        (0.5, 1.0, 0.0),  # 500 ms late: the client waited 600 ms for its first token
        (1.5, 1.0, 1.0),  # sent early (never happens): counted from the send
    ],
)
def test_goodput_from_the_schedule_counts_the_load_generators_lag(
    scheduled_s: float | None, good_as_sent: float, good_from_schedule: float
) -> None:
    outcome = _outcome("interactive", "completed", ttft=0.1)
    outcome.scheduled_s = scheduled_s
    score = score_run([outcome], TARGETS, duration_s=1.0)
    assert (score.goodput_rps, score.goodput_from_schedule_rps) == (good_as_sent, good_from_schedule)
