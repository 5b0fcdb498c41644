"""The paper-reproduction benchmarks: each spec loads, is registered, and a tiny run gives the JSON schema."""

import dataclasses
import importlib
import math
from typing import Any

import pytest

from sloguard.bench import SCENARIOS
from sloguard.bench import sa as sa_bench
from sloguard.bench import scorpio as scorpio_bench
from sloguard.bench import ssjf as ssjf_bench
from sloguard.bench import trace as trace_bench
from sloguard.bench.workloads import data_dir

try:
    data_dir()
    HAVE_DATA = True
except FileNotFoundError:
    HAVE_DATA = False
needs_data = pytest.mark.skipif(not HAVE_DATA, reason="shared/data is not available")


@pytest.mark.parametrize("name", ["scorpio", "ssjf", "sa", "trace"])
def test_scenario_is_registered_with_a_versioned_quick_and_full_spec(name: str) -> None:
    module = importlib.import_module(SCENARIOS[name])
    assert callable(module.run)
    assert module.SPEC.version >= 1 and module.QUICK.version == module.SPEC.version
    assert module.QUICK != module.SPEC


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@needs_data
def test_scorpio_tiny_run_has_rates_ascending_and_every_policy() -> None:
    spec = dataclasses.replace(scorpio_bench.QUICK, requests_per_point=24, load_factors=(0.5, 3.0))
    data = scorpio_bench.run_spec(spec, policies=("fcfs", "scorpio-engine", "sloguard"))
    rates = [p["rate_rps"] for p in data["points"]]
    assert rates == sorted(rates) and len(rates) == 2
    for point in data["points"]:
        assert set(point["policies"]) == {"fcfs", "scorpio-engine", "sloguard"}
        for figures in point["policies"].values():
            assert _number(figures["goodput_rps"]) and 0.0 <= figures["adherence"] <= 1.0
    assert "| rate (req/s) |" in scorpio_bench.markdown(data)
    assert scorpio_bench.plot(data).startswith(b"\x89PNG")


@needs_data
def test_ssjf_tiny_run_reports_mean_jct_for_the_required_policies() -> None:
    spec = dataclasses.replace(ssjf_bench.QUICK, rates_rps=(8.0,), runs=1, jobs_per_run=12)
    data = ssjf_bench.run_spec(spec)
    for block in (data, data["calibrated"]):
        assert {"fcfs", "sjf", "oracle_sjf", "sloguard"} <= set(block["policies"])
        assert all(v["mean_jct_s"] > 0 for v in block["policies"].values())
    # the paper's job model: one job alone takes 0.1 s + 0.02 s per token, so every JCT is at least that
    assert data["policies"]["fcfs"]["mean_jct_s"] >= 0.12


@needs_data
def test_sa_tiny_run_has_cases_with_attainment_latency_and_g() -> None:
    spec = dataclasses.replace(sa_bench.QUICK, requests=8, max_batches=(1, 4), seeds=(5, 6))
    data = sa_bench.run_spec(spec)
    assert [c["max_batch"] for c in data["cases"]] == [1, 4]
    for case in data["cases"]:
        assert {"fcfs", "sa", "sloguard"} <= set(case["policies"])
        for figures in case["policies"].values():
            assert 0.0 <= figures["attainment"] <= 1.0 and _number(figures["G"])
            assert figures["mean_latency_s"] is None or figures["mean_latency_s"] > 0
            per_seed = figures["attainment_per_seed"]
            assert len(per_seed) == 2 and figures["attainment"] == pytest.approx(sum(per_seed) / 2, abs=1e-4)
        assert 0 <= sa_bench.wins(case, "sloguard", "sa") <= 2
    assert "| >= sa on |" in sa_bench.markdown(data)
    # the convergence curve: one attainment per iteration budget, for each batch cap it covers
    assert [(c["policy"], c["max_batch"]) for c in data["convergence"]] == [("sa", 1)]
    curve = data["convergence"][0]
    assert curve["iterations"] == list(spec.convergence_iterations)
    assert len(curve["attainment"]) == len(curve["iterations"])
    assert all(0.0 <= a <= 1.0 for a in curve["attainment"])
    assert "Convergence" in sa_bench.markdown(data)
    assert sa_bench.convergence_plot(data).startswith(b"\x89PNG")


@needs_data
def test_trace_tiny_run_counts_slo_met_requests_per_policy() -> None:
    data = trace_bench.run_spec(dataclasses.replace(trace_bench.QUICK, window_s=15.0))
    requests = {v["requests"] for v in data["policies"].values()}
    assert len(requests) == 1 and requests.pop() > 0
    for figures in data["policies"].values():
        assert 0 <= figures["slo_met"] <= figures["requests"]
        assert figures["adherence"] == pytest.approx(figures["slo_met"] / figures["requests"], abs=1e-4)
        assert _number(figures["goodput_rps"]) and figures["goodput_rps"] >= 0.0
