"""`SloguardPolicy._running_min_tpot_s` is computed once per release round (sidecar/core/policies/sloguard.py)

The TPOT gate asks for the tightest budget the running requests have left for every candidate it judges,
and each answer walks every running request: at a full batch in front of real vLLM that is hundreds of
walks a second. Within a round only a started request (its own target) and a waiver change the answer, so
the policy keeps it for the round. Pinned here: over seeded random event sequences (arrivals, releases,
progress, finishes; three classes whose TPOT gate both admits and waives) every answer the gate gets
equals a fresh walk. Leaving out either update (a start, a waiver) fails it."""

import random
import types

import pytest

from sloguard.api.sidecar_config import SidecarConfig
from sloguard.predictor import FixedLength
from sloguard.sidecar.core.policies.sloguard import SloguardPolicy
from sloguard.sidecar.core.policy import EngineView
from sloguard.sidecar.core.registry import create_policy
from sloguard.sidecar.core.requests import Outcome, RequestSpec

CLASSES: dict[str, tuple[float, float]] = {"tight": (1.0, 0.03), "mid": (2.0, 0.06), "loose": (20.0, 0.2)}
KINDS = ("arrive", "arrive", "release", "token", "finish")
SEQUENCES = 100


def _checked_policy(tighten: bool, lost: bool) -> tuple[SloguardPolicy, list[float | None]]:
    config = SidecarConfig.model_validate(
        {
            "classes": [{"name": n, "ttft_s": t, "tpot_s": p} for n, (t, p) in CLASSES.items()],
            "policy": {"name": "sloguard", "parameters": {"tpot_budget": tighten, "tpot_budget_lost": lost}},
        }
    )
    policy = create_policy(config, predictor=FixedLength(40))
    assert isinstance(policy, SloguardPolicy)
    answers: list[float | None] = []

    def checked(self: SloguardPolicy) -> float | None:
        value = SloguardPolicy._running_min_tpot_s(self)
        assert value == self._tightest_running_budget_s()
        answers.append(value)
        return value

    setattr(policy, "_running_min_tpot_s", types.MethodType(checked, policy))  # noqa: B010
    return policy, answers


def _drive(policy: SloguardPolicy, rng: random.Random) -> None:
    now_s, serial = 0.0, 0
    tokens: dict[str, int] = {}
    for _ in range(rng.randint(5, 120)):
        kind, name = rng.choice(KINDS), rng.choice(sorted(CLASSES))
        amount = rng.randint(1, 600)
        now_s += rng.uniform(0.0, 0.05)
        if kind == "arrive":
            serial += 1
            ttft_s, tpot_s = CLASSES[name]
            spec = RequestSpec(
                request_id=f"r{serial}",
                slo_class=name,
                ttft_s=ttft_s,
                tpot_s=tpot_s,
                prompt_tokens=amount,
                max_tokens=64,
                arrival_s=now_s,
            )
            policy.submit(spec, now_s)
        elif kind == "release":
            for r in policy.release(now_s, EngineView(in_flight_cap=8)).releases:
                tokens[r.request_id] = 0
        elif tokens:
            request_id = sorted(tokens)[amount % len(tokens)]
            if kind == "token":
                tokens[request_id] = min(64, tokens[request_id] + 1 + amount % 8)
                policy.on_tokens(request_id, now_s, tokens[request_id])
            else:
                done = tokens.pop(request_id)
                policy.on_finish(request_id, now_s, outcome=Outcome.COMPLETED, output_tokens=done)


@pytest.mark.parametrize(("tighten", "lost"), [(True, True), (True, False), (False, True), (False, False)])
def test_every_answer_in_a_round_equals_a_fresh_walk(tighten: bool, lost: bool) -> None:
    rng = random.Random(20261206)
    asked = 0
    for _ in range(SEQUENCES):
        policy, answers = _checked_policy(tighten, lost)
        _drive(policy, rng)
        asked += len(answers)
        if not (tighten or lost):
            assert all(a is None for a in answers)
    assert asked > SEQUENCES  # the gate was exercised, not skipped
