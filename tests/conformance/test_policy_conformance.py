"""Every registered policy keeps the contract of sloguard.sidecar.core.policy.

Property tests drive each policy through random workloads on a toy virtual-time engine
(sloguard_testing.policy_driver, which raises on any broken invariant): each request ends exactly once,
no admitted request is lost, in-flight and KV limits hold, priorities come only from policies that
declare them, and the same inputs and seed give the same decisions. Table tests check that bad input
is refused with a clear error and changes nothing.
"""

import math
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sloguard_testing.policy_driver import Workload, run

from sloguard.api.errors import RejectionReason
from sloguard.api.policies import SchedulingPolicyName
from sloguard.api.sidecar_config import SidecarConfig
from sloguard.api.sloclass import OnUnattainable
from sloguard.predictor import ClassMeanLengths
from sloguard.sidecar.core.base_policy import QueuePolicy
from sloguard.sidecar.core.latency import LatencyModel
from sloguard.sidecar.core.ledger import LedgerError
from sloguard.sidecar.core.policy import Admitted, EngineView, PolicyParameterError, Rejected
from sloguard.sidecar.core.registry import POLICIES, create_policy
from sloguard.sidecar.core.requests import InvalidRequestError, Outcome, RequestSpec

NAMES = list(SchedulingPolicyName)
CLASSES: list[dict[str, Any]] = [
    {"name": "chat", "ttft_s": 0.5, "tpot_s": 0.05, "priority": 10},
    {"name": "batch", "ttft_s": 15.0, "tpot_s": 0.1, "on_unattainable": "BestEffort"},
    {"name": "code", "ttft_s": 3.0, "tpot_s": 0.03, "deadline_s": 20.0},
]


def config(name: SchedulingPolicyName, **limits: int) -> SidecarConfig:
    return SidecarConfig.model_validate(
        {"classes": CLASSES, "policy": {"name": name.value}, "limits": {"max_queue_depth": 64, **limits}}
    )


def make(name: SchedulingPolicyName, *, seed: int = 0, oracle: bool = False, **limits: int) -> QueuePolicy:
    return create_policy(
        config(name, **limits), predictor=ClassMeanLengths(), latency=LatencyModel(), seed=seed, oracle=oracle
    )


def spec(request_id: str = "r1", slo_class: str = "chat", **overrides: Any) -> RequestSpec:
    cls = next((c for c in CLASSES if c["name"] == slo_class), CLASSES[0])
    fields: dict[str, Any] = {
        "request_id": request_id,
        "slo_class": slo_class,
        "ttft_s": cls["ttft_s"],
        "tpot_s": cls["tpot_s"],
        "deadline_s": cls.get("deadline_s"),
        "prompt_tokens": 100,
        "max_tokens": 200,
        "arrival_s": 0.0,
        "true_output_tokens": 50,
    }
    fields.update(overrides)
    return RequestSpec(**fields)


request_rows = st.tuples(
    st.floats(min_value=0.0, max_value=0.5),  # inter-arrival gap
    st.integers(min_value=0, max_value=len(CLASSES) - 1),
    st.integers(min_value=0, max_value=1500),  # prompt tokens
    st.integers(min_value=0, max_value=300),  # true output tokens
    st.integers(min_value=1, max_value=400),  # max_tokens
    st.one_of(st.none(), st.floats(min_value=0.0, max_value=3.0)),  # cancel after arrival
)


def workload_from(rows: Sequence[tuple[float, int, int, int, int, float | None]]) -> Workload:
    requests = []
    cancels = {}
    t = 0.0
    for i, (gap, class_index, prompt, out, max_tokens, cancel_after) in enumerate(rows):
        t += gap
        cls = CLASSES[class_index]
        requests.append(
            RequestSpec(
                request_id=f"r{i}",
                slo_class=cls["name"],
                ttft_s=cls["ttft_s"],
                tpot_s=cls["tpot_s"],
                deadline_s=cls.get("deadline_s"),
                prompt_tokens=prompt,
                max_tokens=max_tokens,
                arrival_s=t,
                true_output_tokens=out,
                on_unattainable=OnUnattainable(cls.get("on_unattainable", "Reject")),
            )
        )
        if cancel_after is not None:
            cancels[f"r{i}"] = t + cancel_after
    return Workload(requests, cancels)


def test_the_registry_serves_exactly_the_api_names() -> None:
    assert set(POLICIES) == set(SchedulingPolicyName)
    for name, cls in POLICIES.items():
        assert cls.name is name
        assert make(name).name is name


@pytest.mark.parametrize("name", NAMES, ids=str)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(request_rows, min_size=1, max_size=30),
    cap=st.integers(min_value=1, max_value=6),
    kv=st.one_of(st.none(), st.integers(min_value=200, max_value=8000)),
    oracle=st.booleans(),
    seed=st.integers(min_value=0, max_value=3),
)
def test_every_request_ends_exactly_once_within_the_limits(
    name: SchedulingPolicyName, rows: Any, cap: int, kv: int | None, *, oracle: bool, seed: int
) -> None:
    workload = workload_from(rows)
    policy = make(name, seed=seed, oracle=oracle)
    result = run(policy, workload, in_flight_cap=cap, kv_capacity_tokens=kv)  # raises on a violation
    assert set(result.ends) == {r.request_id for r in workload.requests}
    assert result.max_in_flight <= cap
    counts = policy.ledger.counts()
    assert sum(counts.outcomes.values()) == len(workload.requests)
    assert policy.snapshot().queue_depth == 0 and policy.snapshot().in_flight == 0


@pytest.mark.parametrize("name", NAMES, ids=str)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(request_rows, min_size=1, max_size=25), seed=st.integers(min_value=0, max_value=5))
def test_identical_inputs_and_seed_give_identical_decisions(
    name: SchedulingPolicyName, rows: Any, seed: int
) -> None:
    workload = workload_from(rows)
    first = run(make(name, seed=seed), workload, in_flight_cap=3, kv_capacity_tokens=4000)
    second = run(make(name, seed=seed), workload, in_flight_cap=3, kv_capacity_tokens=4000)
    assert first.decisions == second.decisions
    assert first.ends == second.ends


@pytest.mark.parametrize("name", NAMES, ids=str)
def test_a_heavy_load_run_serves_and_accounts_for_everyone(name: SchedulingPolicyName) -> None:
    rows = [(0.02, i % 3, 200 + (i * 37) % 900, 10 + (i * 53) % 200, 256, None) for i in range(120)]
    policy = make(name, max_queue_depth=1000)
    result = run(policy, workload_from(rows), in_flight_cap=8, kv_capacity_tokens=20000)
    counts = policy.ledger.counts()
    assert counts.total(Outcome.COMPLETED) > 0
    assert sum(counts.outcomes.values()) == 120 == len(result.ends)


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"prompt_tokens": -1}, RejectionReason.INVALID_REQUEST),
        ({"max_tokens": 0}, RejectionReason.INVALID_REQUEST),
        ({"max_tokens": -5}, RejectionReason.INVALID_REQUEST),
        ({"arrival_s": math.nan}, RejectionReason.INVALID_REQUEST),
        ({"arrival_s": math.inf}, RejectionReason.INVALID_REQUEST),
        ({"ttft_s": math.nan}, RejectionReason.INVALID_REQUEST),
        ({"tpot_s": 0.0}, RejectionReason.INVALID_REQUEST),
        ({"deadline_s": -1.0}, RejectionReason.INVALID_REQUEST),
        ({"prompt_tokens": 1.5}, RejectionReason.INVALID_REQUEST),
        ({"prompt_tokens": True}, RejectionReason.INVALID_REQUEST),
        ({"true_output_tokens": -3}, RejectionReason.INVALID_REQUEST),
        ({"request_id": ""}, RejectionReason.INVALID_REQUEST),
        ({"slo_class": ""}, RejectionReason.UNKNOWN_CLASS),
    ],
)
def test_a_malformed_request_cannot_be_built(overrides: dict[str, Any], reason: RejectionReason) -> None:
    with pytest.raises(InvalidRequestError) as error:
        spec(**overrides)
    assert error.value.reason is reason
    assert str(error.value)


@pytest.mark.parametrize("name", NAMES, ids=str)
def test_an_unknown_class_is_rejected_and_counted(name: SchedulingPolicyName) -> None:
    policy = make(name)
    request = RequestSpec(
        request_id="x", slo_class="nope", ttft_s=1.0, tpot_s=0.1, prompt_tokens=1, max_tokens=1, arrival_s=0.0
    )
    decision = policy.submit(request, 0.0)
    assert isinstance(decision, Rejected)
    assert decision.reason is RejectionReason.UNKNOWN_CLASS
    assert "nope" in decision.detail
    assert policy.ledger.counts().rejections == {(RejectionReason.UNKNOWN_CLASS, "nope"): 1}
    assert policy.snapshot().queue_depth == 0


@pytest.mark.parametrize("name", NAMES, ids=str)
@pytest.mark.parametrize("bad_time", [math.nan, math.inf, -math.inf])
def test_a_non_finite_time_raises_and_changes_nothing(name: SchedulingPolicyName, bad_time: float) -> None:
    policy = make(name)
    assert isinstance(policy.submit(spec("a"), 0.0), Admitted)
    before = (policy.snapshot(), policy.ledger.counts())
    with pytest.raises(ValueError, match="finite"):
        policy.submit(spec("b"), bad_time)
    with pytest.raises(ValueError, match="finite"):
        policy.release(bad_time, EngineView(in_flight_cap=4))
    with pytest.raises(ValueError, match="finite"):
        policy.cancel("a", bad_time)
    assert (policy.snapshot(), policy.ledger.counts()) == before


@pytest.mark.parametrize("name", NAMES, ids=str)
def test_driver_mistakes_raise_clear_errors(name: SchedulingPolicyName) -> None:
    policy = make(name)
    assert isinstance(policy.submit(spec("a"), 0.0), Admitted)
    with pytest.raises(ValueError, match="already open"):
        policy.submit(spec("a"), 0.1)
    with pytest.raises(LedgerError):
        policy.on_finish("ghost", 0.2, outcome=Outcome.COMPLETED, output_tokens=3)
    step = policy.release(0.0, EngineView(in_flight_cap=4))
    assert [r.request_id for r in step.releases] == ["a"]
    with pytest.raises(ValueError, match="output_tokens"):
        policy.on_tokens("a", 0.3, -1)
    with pytest.raises(ValueError, match="on_finish takes"):
        policy.on_finish("a", 0.3, outcome=Outcome.REJECTED, output_tokens=3)
    policy.on_finish("a", 0.4, outcome=Outcome.COMPLETED, output_tokens=3)
    with pytest.raises(LedgerError):
        policy.on_finish("a", 0.5, outcome=Outcome.COMPLETED, output_tokens=3)
    assert policy.cancel("a", 0.6) is False
    with pytest.raises(ValueError, match="in_flight_cap"):
        EngineView(in_flight_cap=-1)


@pytest.mark.parametrize("name", NAMES, ids=str)
def test_limits_and_queue_depth_are_refused_with_their_reasons(name: SchedulingPolicyName) -> None:
    policy = make(name, max_queue_depth=1, max_prompt_tokens=500, max_output_tokens=300)
    too_long = policy.submit(spec("long", prompt_tokens=501), 0.0)
    assert isinstance(too_long, Rejected) and too_long.reason is RejectionReason.INVALID_REQUEST
    too_many = policy.submit(spec("many", max_tokens=301), 0.0)
    assert isinstance(too_many, Rejected) and too_many.reason is RejectionReason.INVALID_REQUEST
    assert isinstance(policy.submit(spec("first", slo_class="batch"), 0.0), Admitted)
    full = policy.submit(spec("second", slo_class="batch"), 0.0)
    assert isinstance(full, Rejected) and full.reason is RejectionReason.QUEUE_FULL
    assert full.retry_after_s is not None and full.retry_after_s > 0


@pytest.mark.parametrize("name", NAMES, ids=str)
def test_an_oracle_refuses_a_request_without_its_true_length(name: SchedulingPolicyName) -> None:
    policy = make(name, oracle=True)
    decision = policy.submit(spec("a", true_output_tokens=None), 0.0)
    assert isinstance(decision, Rejected) and decision.reason is RejectionReason.INVALID_REQUEST
    assert isinstance(policy.submit(spec("b"), 0.0), Admitted)


@pytest.mark.parametrize("name", NAMES, ids=str)
def test_estimate_answers_like_submit_without_changing_state(name: SchedulingPolicyName) -> None:
    policy = make(name)
    before = (policy.snapshot(), policy.ledger.counts())
    estimate = policy.estimate(spec("a"), 0.0)
    assert (policy.snapshot(), policy.ledger.counts()) == before
    assert type(policy.submit(spec("a"), 0.0)) is type(estimate)


@pytest.mark.parametrize("name", NAMES, ids=str)
@pytest.mark.parametrize("parameters", [{"no_such_knob": 1}])
def test_unknown_parameters_are_refused(name: SchedulingPolicyName, parameters: dict[str, Any]) -> None:
    bad = SidecarConfig.model_validate(
        {"classes": CLASSES, "policy": {"name": name.value, "parameters": parameters}}
    )
    with pytest.raises(PolicyParameterError, match="no_such_knob"):
        create_policy(bad, predictor=ClassMeanLengths())


@pytest.mark.parametrize(
    ("name", "parameters", "match"),
    [
        (SchedulingPolicyName.SCORPIO, {"eta": "fast"}, "eta"),
        (SchedulingPolicyName.SCORPIO, {"margin_s": -0.1}, "margin_s"),
        (SchedulingPolicyName.SA, {"iterations": 1.5}, "iterations"),
        (SchedulingPolicyName.SJF, {"starvation_wait_s": math.nan}, "starvation_wait_s"),
        (SchedulingPolicyName.SLOGUARD, {"reject_quantile": 1.5}, "reject_quantile"),
        (SchedulingPolicyName.SLOGUARD, {"calibrate_decode": 1}, "calibrate_decode"),
    ],
)
def test_badly_typed_parameters_are_refused(
    name: SchedulingPolicyName, parameters: dict[str, Any], match: str
) -> None:
    bad = SidecarConfig.model_validate(
        {"classes": CLASSES, "policy": {"name": name.value, "parameters": parameters}}
    )
    with pytest.raises(PolicyParameterError, match=match):
        create_policy(bad, predictor=ClassMeanLengths())


@pytest.mark.parametrize("name", NAMES, ids=str)
def test_shed_rejects_every_queued_request_and_keeps_in_flight_ones(name: SchedulingPolicyName) -> None:
    policy = make(name)
    for i in range(3):
        assert isinstance(policy.submit(spec(f"r{i}", slo_class="batch"), 0.0), Admitted)
    step = policy.release(0.0, EngineView(in_flight_cap=1))
    assert len(step.releases) == 1
    shed = policy.shed(0.1, RejectionReason.DRAINING)
    assert sorted(r.request_id for r in shed) == sorted({"r0", "r1", "r2"} - {step.releases[0].request_id})
    assert all(r.reason is RejectionReason.DRAINING for r in shed)
    assert policy.snapshot().in_flight == 1 and policy.snapshot().queue_depth == 0
