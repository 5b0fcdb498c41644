"""Do no harm below saturation (issue 16): the sloguard policy, learning the engine from scratch, against
fcfs pass-through on a toy engine shaped like the tiny Llama on vLLM-CPU, with and without host stalls.

The engine (a time-stepped model, 5 ms steps, seeded): first token 8 ms + 20 us per prompt token after
release; then one token per 1.9 ms + 0.12 ms per running request; during a host stall (100-400 ms, Poisson
at `stalls_per_s`) nothing advances. Classes as the real-vLLM benchmark derives them (TTFT 79 ms / 394 ms /
3.94 s, TPOT 9.5 / 19 / 48 ms). The policy starts from the generic prior (an 8B model on an A100), so it must
learn this engine from its first requests. Pure and deterministic.
"""

import random

import pytest

from sloguard.api.inferencepool import SidecarLimits
from sloguard.api.policies import SchedulingPolicyName
from sloguard.api.sidecar_config import PolicyConfig, SidecarConfig, SLOClassConfig
from sloguard.predictor import load_default_predictor
from sloguard.sidecar.core.policy import EngineView, Rejected
from sloguard.sidecar.core.registry import create_policy
from sloguard.sidecar.core.requests import Outcome, RequestSpec

CLASSES = [
    SLOClassConfig(name="interactive", ttft_s=0.0788, tpot_s=0.00952),
    SLOClassConfig(name="standard", ttft_s=0.394, tpot_s=0.019, default=True),
    SLOClassConfig(name="batch", ttft_s=3.94, tpot_s=0.0476),
]
STEP_S = 0.005


def _good_and_rejected(
    policy_name: str, rate_rps: float, stalls_per_s: float, seconds: float
) -> tuple[int, int]:
    parameters = {"calibrate_decode": True} if policy_name == "sloguard" else {}
    config = SidecarConfig(
        classes=CLASSES,
        policy=PolicyConfig(name=SchedulingPolicyName(policy_name), parameters=parameters),
        limits=SidecarLimits(max_queue_depth=100_000, min_in_flight=128, max_in_flight=128),
    )
    policy = create_policy(config, predictor=load_default_predictor())
    by_name = {c.name: c for c in CLASSES}
    rng = random.Random(7)
    specs: dict[str, RequestSpec] = {}
    running: dict[
        str, list[float]
    ] = {}  # id -> [first token due, tokens done, output, next token due, first]
    t = next_arrival = stall_until = 0.0
    good = rejected = index = 0
    while t < seconds:
        t += STEP_S
        if rng.random() < stalls_per_s * STEP_S:
            stall_until = t + rng.uniform(0.1, 0.4)
        while next_arrival <= t:
            index += 1
            slo = by_name[rng.choices(list(by_name), [0.4, 0.4, 0.2])[0]]
            spec = RequestSpec(
                request_id=f"r{index}",
                slo_class=slo.name,
                ttft_s=slo.ttft_s,
                tpot_s=slo.tpot_s,
                deadline_s=None,
                class_priority=0,
                on_unattainable=slo.on_unattainable,
                prompt_tokens=rng.randint(8, 256),
                max_tokens=rng.randint(4, 128),
                arrival_s=next_arrival,
                prompt_text=None,
            )
            specs[spec.request_id] = spec
            rejected += isinstance(policy.submit(spec, next_arrival), Rejected)
            next_arrival += rng.expovariate(rate_rps)
        step = policy.release(t, EngineView(in_flight_cap=128))
        rejected += len(step.rejections)
        for release in step.releases:
            spec = specs[release.request_id]
            running[release.request_id] = [
                t + 0.008 + 0.00002 * spec.prompt_tokens,
                0,
                spec.max_tokens,
                0.0,
                0.0,
            ]
        if t < stall_until:
            continue
        itl_s = 0.0019 + 0.00012 * len(running)
        for request_id, state in list(running.items()):
            if state[1] == 0 and t >= state[0]:
                state[1], state[3], state[4] = 1, t + itl_s, t
                policy.on_first_token(request_id, t)
            elif state[1] > 0 and t >= state[3]:
                state[1] = min(state[2], state[1] + int((t - state[3]) / itl_s) + 1)
                state[3] = t + itl_s
                policy.on_tokens(request_id, t, int(state[1]))
                if state[1] >= state[2]:
                    spec, first = specs[request_id], state[4]
                    tpot_ok = state[1] < 2 or (t - first) / (state[1] - 1) <= spec.tpot_s
                    good += first - spec.arrival_s <= spec.ttft_s and tpot_ok
                    policy.on_finish(request_id, t, outcome=Outcome.COMPLETED, output_tokens=int(state[1]))
                    del running[request_id]
    return good, rejected


@pytest.mark.parametrize(("rate_rps", "stalls_per_s"), [(48.0, 0.0), (48.0, 2.0), (96.0, 2.0)])
def test_sloguard_learning_from_scratch_does_no_harm_against_pass_through(
    rate_rps: float, stalls_per_s: float
) -> None:
    ours, rejected = _good_and_rejected("sloguard", rate_rps, stalls_per_s, seconds=12.0)
    theirs, _ = _good_and_rejected("fcfs", rate_rps, stalls_per_s, seconds=12.0)
    if stalls_per_s == 0.0:
        # an engine that keeps up: (almost) nothing turned away; the first requests, met while the model
        # still holds the A100 prior, may cost a few (2 %)
        assert ours >= 0.98 * theirs
        assert rejected <= 0.01 * rate_rps * 12.0
    else:  # stalls: requests that cannot make it anyway are turned away, the rest are served better
        assert ours >= theirs
