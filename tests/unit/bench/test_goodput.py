"""The one goodput of every benchmark (bench/runner.py): met / offered window, which rejecting cannot raise.

Also the engine settings every benchmark variant runs on: vLLM's scheduling policy as the operator deploys
it beside the policy, and SCORPIO's credit-batching accounting only where the engine batches by credit.
"""

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sloguard.api import SchedulingPolicyName
from sloguard.bench import runner
from sloguard.bench.runner import (
    EngineSetup,
    Score,
    deployed_engine_scheduling,
    goodput_rps,
    offered_window_s,
    policy_parameters,
    score,
)
from sloguard.sidecar.core.requests import Outcome, RequestSpec
from sloguard.sim.cosim import RequestRecord
from sloguard.sim.engine import Engine

TTFT_S = 1.0
TPOT_S = 0.1


def offered(arrivals_s: list[float]) -> list[RequestSpec]:
    return [
        RequestSpec(
            request_id=f"r{i}",
            slo_class="chat" if i % 2 else "code",
            ttft_s=TTFT_S,
            tpot_s=TPOT_S,
            prompt_tokens=10,
            max_tokens=100,
            arrival_s=arrival,
        )
        for i, arrival in enumerate(arrivals_s)
    ]


def served(spec: RequestSpec, *, start_delay_s: float, tokens: int = 11) -> RequestRecord:
    """Completed: first token after `start_delay_s`, then 0.05 s per token (meets the TPOT target)."""
    first = spec.arrival_s + start_delay_s
    return RequestRecord(
        spec.request_id,
        spec.slo_class,
        spec.arrival_s,
        Outcome.COMPLETED,
        first_token_s=first,
        finish_s=first + 0.05 * (tokens - 1),
        output_tokens=tokens,
    )


def rejected(spec: RequestSpec) -> RequestRecord:
    return RequestRecord(spec.request_id, spec.slo_class, spec.arrival_s, Outcome.REJECTED)


@pytest.mark.parametrize(
    ("arrivals_s", "window_s"),
    [([0.0, 1.0, 4.0], 4.0), ([3.0, 2.0, 10.5], 8.5), ([7.0], 0.0), ([1.0, 1.0], 0.0)],
)
def test_the_offered_window_runs_from_the_first_to_the_last_arrival(
    arrivals_s: list[float], window_s: float
) -> None:
    assert offered_window_s(arrivals_s) == pytest.approx(window_s)


@pytest.mark.parametrize("arrivals_s", [[], [0.0, math.inf], [math.nan]])
def test_an_empty_or_broken_run_has_no_window(arrivals_s: list[float]) -> None:
    with pytest.raises(ValueError, match="arrival"):
        offered_window_s(arrivals_s)


def test_goodput_needs_a_window_and_says_so() -> None:
    assert goodput_rps(6, 3.0) == 2.0
    with pytest.raises(ValueError, match="arrived at once"):
        goodput_rps(6, 0.0)
    with pytest.raises(ValueError, match="met"):
        goodput_rps(-1, 3.0)


def test_rejecting_early_to_end_sooner_does_not_raise_goodput() -> None:
    """The old definition (met / first arrival to last finish) paid a policy for rejecting the long tail."""
    specs = offered([float(i) for i in range(10)])  # window 9 s
    # patient: serves all ten, the last one finishes late (its first token 0.5 s after arrival, then a
    # long answer), meets eight
    patient = [served(s, start_delay_s=0.5, tokens=200 if i == 9 else 11) for i, s in enumerate(specs)]
    patient[0] = served(specs[0], start_delay_s=5.0)  # missed TTFT
    patient[1] = served(specs[1], start_delay_s=5.0)
    # rejecting: meets the same eight and rejects the other two at once, so its run ends 9 s sooner
    rejecting = [rejected(s) if i < 2 else served(s, start_delay_s=0.5) for i, s in enumerate(specs)]
    rejecting[9] = served(specs[9], start_delay_s=0.5)
    last_finish = {
        name: max(r.finish_s or 0.0 for r in records)
        for name, records in {"patient": patient, "rejecting": rejecting}.items()
    }
    assert last_finish["rejecting"] < last_finish["patient"] - 5
    a, b = score(patient, specs), score(rejecting, specs)
    assert a.met == b.met == 8
    assert a.goodput_rps == b.goodput_rps == pytest.approx(8 / 9)
    assert a.adherence == b.adherence == 0.8
    assert b.rejected == 2


@given(
    arrivals=st.lists(st.floats(0, 100), min_size=2, max_size=20),
    delays=st.lists(st.floats(0, 50), min_size=20, max_size=20),
    rejects=st.lists(st.booleans(), min_size=20, max_size=20),
)
def test_goodput_is_met_over_the_offered_window_whatever_the_finish_times(
    arrivals: list[float], delays: list[float], rejects: list[bool]
) -> None:
    specs = offered(arrivals)
    records = [rejected(s) if rejects[i] else served(s, start_delay_s=delays[i]) for i, s in enumerate(specs)]
    result = score(records, specs)
    met = sum(not rejects[i] and delays[i] <= TTFT_S for i in range(len(specs)))
    assert result.met == met
    if max(arrivals) > min(arrivals):
        assert result.goodput_rps == pytest.approx(met / (max(arrivals) - min(arrivals)))
    # turning a met request into a rejection can only lower goodput, never raise it
    for i, record in enumerate(records):
        if record.met(specs[i]):
            fewer = score([*records[:i], rejected(specs[i]), *records[i + 1 :]], specs)
            assert fewer.met == met - 1 and fewer.window_s == result.window_s
            break


def test_a_per_class_score_divides_by_the_whole_runs_window() -> None:
    specs = offered([0.0, 1.0, 2.0, 4.0])  # code: r0, r2 (0 and 2 s); chat: r1, r3 (1 and 4 s)
    records = [served(s, start_delay_s=0.1) for s in specs]
    code = score(records, specs, "code")
    assert (code.requests, code.met, code.window_s) == (2, 2, 4.0)
    assert code.goodput_rps == 0.5
    assert (
        sum(score(records, specs, c).goodput_rps for c in ("code", "chat"))
        == score(records, specs).goodput_rps
    )


def test_a_request_without_a_record_is_a_miss_and_a_stray_record_an_error() -> None:
    specs = offered([0.0, 1.0, 2.0])
    result = score([served(specs[0], start_delay_s=0.1)], specs)
    assert (result.requests, result.met) == (3, 1)
    assert result.adherence == pytest.approx(1 / 3)
    stray = served(offered([0.0, 1.0, 2.0, 3.0])[3], start_delay_s=0.1)
    with pytest.raises(ValueError, match="not offered"):
        score([stray], specs)
    with pytest.raises(ValueError, match="more than one"):
        score([served(specs[0], start_delay_s=0.1)] * 2, specs)


def test_a_burst_reports_adherence_and_refuses_a_goodput() -> None:
    specs = offered([0.0] * 4)
    result = score([served(s, start_delay_s=0.1) for s in specs], specs)
    assert result.adherence == 1.0
    with pytest.raises(ValueError, match="arrived at once"):
        _ = result.goodput_rps
    assert Score(requests=0, met=0, rejected=0, window_s=1.0, latency_sum_s=0.0).adherence == 0.0


@pytest.mark.parametrize("policy", list(SchedulingPolicyName))
def test_the_engine_runs_the_scheduling_policy_the_operator_deploys(policy: SchedulingPolicyName) -> None:
    assert deployed_engine_scheduling(policy) == ("priority" if policy.stamps_engine_priority else "fcfs")
    assert deployed_engine_scheduling(SchedulingPolicyName.SLOGUARD) == "priority"
    assert deployed_engine_scheduling(SchedulingPolicyName.EDF) == "priority"


@pytest.mark.parametrize(
    ("variant", "engine_policy"),
    [
        ("sloguard", "priority"),
        ("edf", "priority"),
        ("oracle_sloguard", "priority"),
        ("sa", "fcfs"),
        ("scorpio", "fcfs"),
        ("fcfs", "fcfs"),
        ("fcfs-v0", "fcfs"),
        ("scorpio-engine", "fcfs"),
    ],
)
def test_every_variant_runs_on_its_deployed_engine(
    monkeypatch: pytest.MonkeyPatch, variant: str, engine_policy: str
) -> None:
    seen: list[str] = []
    real = Engine

    def engine(config: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(config.scheduling_policy)
        return real(config, *args, **kwargs)

    monkeypatch.setattr(runner, "Engine", engine)
    specs = [
        RequestSpec(
            request_id=f"r{i}",
            slo_class="chat",
            ttft_s=5.0,
            tpot_s=0.2,
            prompt_tokens=32,
            max_tokens=64,
            arrival_s=0.1 * i,
            true_output_tokens=8,
        )
        for i in range(3)
    ]
    from sloguard.api.sidecar_config import SLOClassConfig

    records = runner.run_variant(
        variant, specs, [SLOClassConfig(name="chat", ttft_s=5.0, tpot_s=0.2)], EngineSetup()
    )
    assert seen == [engine_policy]
    assert score(records, specs).adherence == 1.0


def test_scorpio_counts_credit_batches_only_inside_an_engine_that_batches_by_credit() -> None:
    setup = EngineSetup()
    assert policy_parameters(SchedulingPolicyName.SCORPIO, setup, "scorpio") == {"credit_batching": False}
    assert policy_parameters(SchedulingPolicyName.SCORPIO, setup, "scorpio-engine")["credit_batching"]
    chosen = EngineSetup(policy_parameters={"scorpio": {"credit_batching": True, "eta": 1.1}})
    assert policy_parameters(SchedulingPolicyName.SCORPIO, chosen, "scorpio") == {
        "credit_batching": True,
        "eta": 1.1,
    }
    assert policy_parameters(SchedulingPolicyName.SA, setup, "sa") == {}
