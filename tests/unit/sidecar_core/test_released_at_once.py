"""Do no harm below saturation (issue 16): sloguard never refuses, at arrival or while queued, a request it
would release at once and whose own prefill fits its TTFT, whatever the engine still prefills for requests
it serves later, and whatever the learned prefill correction says (`released_at_once`,
`engine_order_pending` in sidecar/core/policies/sloguard.py). The engine runs with deadline priorities, so
such a request's fate is the engine's, exactly as under pass-through. Table-driven over the shipped engine
profiles (as shipped and slowed) and learned-scale states, plus a hypothesis test; each case also shows
that with both mechanisms off the same request is refused, so the tests can fail."""

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sloguard.api.sidecar_config import SidecarConfig
from sloguard.bench.runner import EngineSetup
from sloguard.predictor import FixedLength
from sloguard.sidecar.core.base_policy import QueuePolicy
from sloguard.sidecar.core.latency import LatencyModel
from sloguard.sidecar.core.policy import Admitted, EngineView, Rejected
from sloguard.sidecar.core.registry import create_policy
from sloguard.sidecar.core.requests import RequestSpec
from sloguard.sim.engine import ScaledStepTime
from sloguard.sim.profiles import available_profiles, load_profile

OUT = 50
CAP = 64
ENGINES = [(name, factor) for name in available_profiles() for factor in (1.0, 2.5)]
ON = {"engine_order_pending": True}  # off by default: see the policy's docstring
OFF = {"released_at_once": False, "engine_order_pending": False}
LOOSE = {"name": "loose", "ttft_s": 1000.0, "tpot_s": 100.0}


def engine_latency(profile: str, factor: float) -> LatencyModel:
    step = load_profile(profile).step_time()
    return EngineSetup(profile=profile).latency_model(ScaledStepTime(step, factor))


def make_policy(latency: LatencyModel, tight: dict[str, Any], **parameters: Any) -> QueuePolicy:
    config = SidecarConfig.model_validate(
        {"classes": [tight, LOOSE], "policy": {"name": "sloguard", "parameters": parameters}}
    )
    return create_policy(config, predictor=FixedLength(OUT), latency=latency)


def spec(rid: str, cls: dict[str, Any], arrival: float, prompt: int) -> RequestSpec:
    return RequestSpec(
        request_id=rid,
        slo_class=cls["name"],
        ttft_s=cls["ttft_s"],
        tpot_s=cls["tpot_s"],
        prompt_tokens=prompt,
        max_tokens=OUT,
        arrival_s=arrival,
        true_output_tokens=OUT,
    )


def learn(policy: QueuePolicy, scale: float, late_first_tokens: int, on_time_first_tokens: int) -> None:
    """Put the policy's latency model in a learned state: first tokens `scale` x the prior's prefill
    (a host stall, or queueing misread as prefill), then `late_first_tokens` first tokens past their TTFT
    and `on_time_first_tokens` within it (whether the engine demonstrably keeps up, `KeepingUp`)."""
    latency = policy.latency
    for i in range(3):
        latency.observe_prefill(100.0, scale * latency.prefill.time_s(100.0), 0.001 * i)
    for _ in range(late_first_tokens):
        latency.observe_first_token(on_time=False)
    for _ in range(on_time_first_tokens):
        latency.observe_first_token(on_time=True)


def load_engine(policy: QueuePolicy, count: int, prompt: int) -> None:
    """`count` loose requests (late TTFT deadlines) released and still prefilling: the engine is busy,
    slots are free, the sidecar's queue is empty."""
    for i in range(count):
        assert isinstance(policy.submit(spec(f"bulk{i}", LOOSE, 0.0, prompt), 0.0), Admitted)
    step = policy.release(0.0, EngineView(in_flight_cap=CAP))
    assert len(step.releases) == count and policy.in_flight_count < CAP


def arrive_and_release(policy: QueuePolicy, request: RequestSpec, now_s: float) -> bool:
    """Whether the request is admitted and then released (not given up) by the next release."""
    if not isinstance(policy.submit(request, now_s), Admitted):
        return False
    step = policy.release(now_s, EngineView(in_flight_cap=CAP))
    return request.request_id in {r.request_id for r in step.releases}


@pytest.mark.parametrize(("profile", "factor"), ENGINES)
@pytest.mark.parametrize(("scale", "late"), [(1.0, 0), (5.0, 0), (20.0, 12), (0.3, 12)])
def test_a_request_released_at_once_whose_own_prefill_fits_is_served(
    profile: str, factor: float, scale: float, late: int
) -> None:
    """While the engine keeps up (most recent first tokens on time)."""
    latency = engine_latency(profile, factor)
    prompt = 200
    own_s = latency.prefill.time_s(prompt)
    pending_tokens = 20 * max(2000, int(latency.prefill.n0_tokens))
    assert latency.prefill.time_s(pending_tokens + prompt) > 1.5 * own_s  # the engine's backlog is real
    tight = {"name": "tight", "ttft_s": 1.2 * own_s, "tpot_s": 100.0}
    outcomes = {}
    for name, parameters in (("on", ON), ("off", OFF)):
        policy = make_policy(latency, tight, **parameters)
        load_engine(policy, 20, pending_tokens // 20)
        learn(policy, scale, late, 12)
        outcomes[name] = arrive_and_release(policy, spec("t", tight, 0.001, prompt), 0.001)
    assert outcomes["on"]
    assert not outcomes["off"]  # the old judgement priced the later-deadline backlog ahead of it


@pytest.mark.parametrize(("profile", "factor"), ENGINES)
def test_a_backlog_the_engine_serves_first_still_refuses(profile: str, factor: float) -> None:
    """Pending requests with earlier deadlines are ahead of it in the engine too: when even the profile's
    prefill of them and its own misses its TTFT, it is refused, as before."""
    latency = engine_latency(profile, factor)
    prompt = 200
    own_s = latency.prefill.time_s(prompt)
    tight = {"name": "tight", "ttft_s": 1.2 * own_s, "tpot_s": 100.0}
    policy = make_policy(latency, tight, **ON)
    pending_tokens = 20 * max(2000, int(latency.prefill.n0_tokens))
    early = {**LOOSE, "ttft_s": 100.0}  # released at 0, deadline 100: before the tight one's below
    for i in range(20):
        assert isinstance(policy.submit(spec(f"early{i}", early, 0.0, pending_tokens // 20), 0.0), Admitted)
    assert len(policy.release(0.0, EngineView(in_flight_cap=CAP)).releases) == 20
    now = 100.0 - 0.5 * own_s
    assert isinstance(policy.submit(spec("t", tight, now, prompt), now), Rejected)


@pytest.mark.parametrize(("profile", "factor"), ENGINES)
def test_while_first_tokens_come_late_the_whole_backlog_counts(profile: str, factor: float) -> None:
    """Once most first tokens come late (overload), the engine's whole backlog is priced as before:
    admitting by deadline order there would push the pending requests it jumps past over their TTFT."""
    latency = engine_latency(profile, factor)
    own_s = latency.prefill.time_s(200)
    tight = {"name": "tight", "ttft_s": 1.2 * own_s, "tpot_s": 100.0}
    pending_tokens = 20 * max(2000, int(latency.prefill.n0_tokens))
    policy = make_policy(latency, tight, **ON)
    load_engine(policy, 20, pending_tokens // 20)
    learn(policy, 1.0, 12, 0)
    assert not arrive_and_release(policy, spec("t", tight, 0.001, 200), 0.001)


@pytest.mark.parametrize(("profile", "factor"), ENGINES)
def test_a_request_whose_own_prefill_misses_is_refused(profile: str, factor: float) -> None:
    latency = engine_latency(profile, factor)
    own_s = latency.prefill.time_s(200)
    hopeless = {"name": "tight", "ttft_s": 0.8 * own_s, "tpot_s": 100.0}
    policy = make_policy(latency, hopeless)
    assert isinstance(policy.submit(spec("t", hopeless, 0.0, 200), 0.0), Rejected)
    fits = {**hopeless, "ttft_s": own_s * (1 + 1e-9)}  # nothing pending: its own prefill, no margin
    assert arrive_and_release(make_policy(latency, fits), spec("f", fits, 0.0, 200), 0.0)


@settings(max_examples=60, deadline=None)
@given(
    engine=st.sampled_from(ENGINES),
    scale=st.floats(min_value=0.05, max_value=50.0),
    late=st.integers(min_value=0, max_value=20),
    prompt=st.integers(min_value=1, max_value=4000),
    backlog=st.integers(min_value=0, max_value=30),
    backlog_prompt=st.integers(min_value=1, max_value=4000),
    slack=st.floats(min_value=1.0, max_value=3.0),
)
def test_never_refuses_what_pass_through_serves_in_time(
    *,
    engine: tuple[str, float],
    scale: float,
    late: int,
    prompt: int,
    backlog: int,
    backlog_prompt: int,
    slack: float,
) -> None:
    """Invariant: free slots, an empty sidecar queue, only later-deadline work in the engine, an engine
    keeping up, and a TTFT target the profile's prefill of its own prompt meets with the TTFT margin to
    spare (`margin_s`, 20 ms, which the policy keeps while any prompt is still prefilling): admitted and
    released at once. With nothing pending no margin is needed (`test_a_request_whose_own_prefill...`)."""
    latency = engine_latency(*engine)
    # 1e-9: at slack 1.0 with a backlog the target equals the policy's wait plus its margin, and a
    # deadline of arrival + target, less now, can round below the target itself
    ttft_s = slack * latency.prefill.time_s(prompt) + (0.02 if backlog else 0.0) + 1e-9
    tight = {"name": "tight", "ttft_s": ttft_s, "tpot_s": 100.0}
    policy = make_policy(latency, tight, **ON)
    if backlog:
        load_engine(policy, backlog, backlog_prompt)
    learn(policy, scale, late, 12)
    assert arrive_and_release(policy, spec("t", tight, 0.001, prompt), 0.001)
