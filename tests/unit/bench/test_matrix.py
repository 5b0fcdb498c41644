"""The workload matrix: seeded draws over every dimension, the seed split, arrival processes, the summary."""

import math
import statistics
from typing import Any

import numpy as np
import pytest

from sloguard.bench import SCENARIOS
from sloguard.bench import matrix as matrix_bench
from sloguard.bench import matrix_workloads as mw
from sloguard.bench.workloads import data_dir
from sloguard.sim.engine import BatchShape, ScaledStepTime
from sloguard.sim.profiles import available_profiles, load_profile

try:
    data_dir()
    HAVE_DATA = True
except FileNotFoundError:
    HAVE_DATA = False
needs_data = pytest.mark.skipif(not HAVE_DATA, reason="shared/data is not available")


def test_matrix_is_registered_with_a_quick_spec_of_at_least_40_points() -> None:
    assert SCENARIOS["matrix"] == "sloguard.bench.matrix"
    assert matrix_bench.QUICK.points >= 40 and matrix_bench.QUICK.version == matrix_bench.SPEC.version


def test_report_seeds_are_fixed_and_disjoint_from_the_tuning_range() -> None:
    assert not set(matrix_bench.TUNING_SEEDS) & set(matrix_bench.REPORT_SEEDS)
    for spec in (matrix_bench.QUICK, matrix_bench.SPEC):
        seeds = matrix_bench.report_seeds(spec)
        assert seeds == matrix_bench.report_seeds(spec) and len(set(seeds)) == spec.points
        assert all(s in matrix_bench.REPORT_SEEDS for s in seeds)
    assert all(s in matrix_bench.TUNING_SEEDS for s in matrix_bench.tuning_seeds(30))


def test_draws_are_deterministic_and_cover_every_dimension_within_its_range() -> None:
    draws = [mw.draw_point(seed, 50) for seed in range(400)]
    assert draws[7] == mw.draw_point(7, 50)
    assert {d.profile for d in draws} == set(available_profiles())
    assert {d.engine_variant for d in draws} == set(mw.ENGINE_VARIANTS)
    assert {d.arrivals for d in draws} == set(mw.ARRIVALS)
    assert {d.lengths for d in draws} == set(mw.LENGTHS)
    assert {d.chunked_prefill for d in draws} == {True, False}
    assert {d.class_count for d in draws} == set(range(2, 9))
    for d in draws:
        assert mw.LOAD_FACTOR[0] <= d.load_factor <= mw.LOAD_FACTOR[1]
        assert len(d.ttft_factors) == len(d.tpot_factors) == len(d.weights) == d.class_count
        assert all(mw.TTFT_FACTOR[0] <= f <= mw.TTFT_FACTOR[1] for f in d.ttft_factors)
        assert all(mw.TPOT_FACTOR[0] <= f <= mw.TPOT_FACTOR[1] for f in d.tpot_factors)
        assert (d.step_time_factor == mw.SLOW_FACTOR) == d.engine_variant.startswith("slow")
        assert (d.num_gpu_blocks == mw.KV_STARVED_BLOCKS) == d.engine_variant.endswith("kv-starved")
    with pytest.raises(ValueError, match="at least 2"):
        mw.draw_point(1, 1)


@pytest.mark.parametrize(("kind", "cv"), [("poisson", 1.0), ("gamma-cv2", 2.0), ("gamma-cv4", 4.0)])
def test_renewal_arrivals_have_the_rate_and_burstiness_asked_for(kind: str, cv: float) -> None:
    times = mw.arrival_times(kind, 20_000, 5.0, seed=3)
    gaps = np.diff(times)
    assert times[0] == 0.0 and all(g >= 0 for g in gaps)
    assert statistics.fmean(gaps) == pytest.approx(0.2, rel=0.1)
    assert float(np.std(gaps) / np.mean(gaps)) == pytest.approx(cv, rel=0.15)


@needs_data
@pytest.mark.parametrize("kind", ["azure-conv", "azure-code", "mooncake"])
def test_trace_windows_are_scaled_to_the_rate(kind: str) -> None:
    times = mw.arrival_times(kind, 200, 4.0, seed=11)
    assert times[0] == 0.0 and times == sorted(times)
    assert times[-1] == pytest.approx(199 / 4.0)
    assert times != mw.arrival_times(kind, 200, 4.0, seed=12)


def test_bad_arrival_requests_get_a_clear_error() -> None:
    with pytest.raises(ValueError, match="rate"):
        mw.arrival_times("poisson", 10, 0.0, seed=1)
    with pytest.raises(ValueError, match="unknown arrival"):
        mw.arrival_times("bursty", 10, 1.0, seed=1)


@pytest.mark.parametrize("factor", [0.5, 2.5])
def test_a_scaled_engine_prices_every_step_by_the_factor_on_both_paths(factor: float) -> None:
    base = load_profile("llama-3-8b-a100").step_time()
    slow = ScaledStepTime(base, factor)
    shape = BatchShape(decode_seqs=3, decode_kv_tokens=900, prefill_chunks=((512, 0),))
    assert slow.step_s(shape) == base.step_s(shape) * factor
    kv = np.array([300, 900, 4000], dtype=np.int64)
    run = slow.decode_run_s(3, kv)
    assert list(run) == [slow.step_s(BatchShape(decode_seqs=3, decode_kv_tokens=int(k))) for k in kv]
    with pytest.raises(ValueError, match="factor"):
        ScaledStepTime(base, 0.0)


def _point(seed: int, **goodputs: tuple[float, float]) -> dict[str, Any]:
    return {
        "params": {
            "seed": seed,
            "profile": "llama-3-8b-a100",
            "engine_variant": "slow",
            "chunked_prefill": False,
            "class_count": 3,
            "arrivals": "poisson",
            "lengths": "sharegpt",
            "load_factor": 0.5,
        },
        "policies": {name: {"goodput_rps": g, "adherence": a} for name, (g, a) in goodputs.items()},
    }


def test_the_summary_follows_the_issues_definitions() -> None:
    base = {n: (1.0, 0.5) for n in matrix_bench.BASELINES}
    points = [
        _point(1, **{**base, "sloguard": (1.0, 0.5), "oracle_sloguard": (1.0, 0.5)}),  # a tie is a win
        _point(2, **{**base, "scorpio": (2.0, 0.8), "sloguard": (1.5, 0.6), "oracle_sloguard": (2.0, 0.6)}),
        _point(
            3, **{**base, "sloguard": (0.9, 0.45), "oracle_sloguard": (0.9, 0.5), "oracle_sa": (9.0, 1.0)}
        ),
    ]
    summary = matrix_bench.summarise(points)
    assert summary["win_fraction"] == pytest.approx(1 / 3, abs=1e-4)
    assert summary["min_ratio_vs_fcfs"] == pytest.approx(0.9)
    assert summary["min_ratio_vs_oracle"] == pytest.approx(0.75)
    assert summary["max_adherence_gap_pp"] == pytest.approx(20.0)  # scorpio 0.8 vs sloguard 0.6
    assert [loss["seed"] for loss in summary["losses"]] == [2, 3]
    assert "scorpio" in summary["losses"][0]["why"] and "fcfs" in summary["losses"][1]["why"]
    assert not math.isnan(summary["median_ratio_vs_fcfs"])


@needs_data
def test_a_tiny_point_runs_every_policy_asked_for_with_the_json_shape() -> None:
    point = matrix_bench.run_point(10_001, 12, policies=("fcfs", "sloguard", "oracle_sloguard"))
    assert set(point["policies"]) == {"fcfs", "sloguard", "oracle_sloguard"}
    for figures in point["policies"].values():
        assert figures["goodput_rps"] >= 0.0 and 0.0 <= figures["adherence"] <= 1.0
    params = point["params"]
    assert params["seed"] == 10_001 and params["capacity_rps"] > 0 and len(params["classes"]) >= 2


def test_the_markdown_lists_every_point_and_every_loss() -> None:
    points = [_point(seed, **{n: (1.0, 1.0) for n in matrix_bench.POLICIES}) for seed in (4, 5)]
    points[1]["policies"]["sloguard"] = {"goodput_rps": 0.5, "adherence": 0.5}
    data = {"spec_version": 1, "requests_per_point": 12, "seeds": [4, 5], "points": points}
    text = matrix_bench.markdown({**data, "summary": matrix_bench.summarise(points)})
    assert "| seed | workload |" in text and "| 4 |" in text and "| 5 |" in text
    assert "Losses (1)" in text and "- seed 5 " in text


def test_the_tuning_command_refuses_report_seeds_and_bad_variants() -> None:
    with pytest.raises(SystemExit):
        matrix_bench.main(["--seed", str(matrix_bench.REPORT_SEEDS.start)])
    with pytest.raises(SystemExit):
        matrix_bench.main(["--seed", "5", "--variant", "broken={"])
    with pytest.raises(SystemExit):
        matrix_bench.main(["--seed", "5", "--variant", "no-equals-sign"])


@needs_data
def test_mooncake_points_carry_their_hash_ids_to_the_engines_prefix_cache() -> None:
    """Mooncake-length points hand each request's hash_ids (512-token blocks) to the engine, whose prefix
    caching is on (vLLM's default), and report the cache's hits; ShareGPT points carry none and hit none."""
    mooncake_seed, sharegpt_seed = 9, 5
    assert mw.draw_point(mooncake_seed, 16).lengths == "mooncake"
    assert mw.draw_point(sharegpt_seed, 16).lengths == "sharegpt"
    for seed, carries in ((mooncake_seed, True), (sharegpt_seed, False)):
        params = mw.draw_point(seed, 16)
        assert params.prefix_caching is carries
        specs = mw.build_point(params).requests_at([float(i) for i in range(16)])
        assert all((s.prefix_hashes is not None) is carries for s in specs)
        assert all(s.prefix_block_tokens == (512 if carries else 0) for s in specs)
    policies = ("fcfs", "sloguard")
    mooncake = matrix_bench.run_point(mooncake_seed, 16, policies=policies)
    sharegpt = matrix_bench.run_point(sharegpt_seed, 16, policies=policies)
    assert mooncake["params"]["prefix_caching"] is True
    assert all(mooncake["policies"][name]["prefix_hit_tokens"] > 0 for name in policies)
    assert all(sharegpt["policies"][name]["prefix_hit_tokens"] == 0 for name in policies)
