"""A progress report of zero output tokens is not a first token (sidecar/core/base_policy.py `on_tokens`).

The simulator reports every in-flight request's cumulative output tokens every 0.25 s (sim/cosim.py), also
while its prefill still runs. Taking such a report as the first token made every policy believe the prompt
had been prefilled (its tokens left the pending prefill) and fed sloguard's prefill calibration a first
token earlier than the engine produced it: on a slowed A100 with chunked prefill (tuning seed 1538), 53 of
85 first tokens were read at a progress tick before the engine's, e.g. released at 0.0, read at 0.25, the
engine's first token at 0.398. Table-driven over the policies that track pending prefill."""

import pytest

from sloguard.api.sidecar_config import SidecarConfig
from sloguard.predictor import FixedLength
from sloguard.sidecar.core.policy import EngineView
from sloguard.sidecar.core.registry import create_policy
from sloguard.sidecar.core.requests import RequestSpec

CLASS = {"name": "c", "ttft_s": 10.0, "tpot_s": 1.0}


@pytest.mark.parametrize("policy_name", ["fcfs", "edf", "mooncake", "scorpio", "sloguard"])
@pytest.mark.parametrize(
    ("reports", "first_token_s", "pending_tokens"),
    [
        ([(0.25, 0)], None, 300.0),  # prefill still running: nothing arrived
        ([(0.25, 0), (0.50, 0)], None, 300.0),
        ([(0.25, 0), (0.50, 1)], 0.50, 0.0),  # the first report with a token is the first token
        ([(0.25, 3)], 0.25, 0.0),
    ],
)
def test_only_a_report_with_tokens_is_a_first_token(
    policy_name: str, reports: list[tuple[float, int]], first_token_s: float | None, pending_tokens: float
) -> None:
    config = SidecarConfig.model_validate({"classes": [CLASS], "policy": {"name": policy_name}})
    policy = create_policy(config, predictor=FixedLength(20))
    spec = RequestSpec(
        request_id="r",
        slo_class="c",
        ttft_s=10.0,
        tpot_s=1.0,
        prompt_tokens=300,
        max_tokens=20,
        arrival_s=0.0,
    )
    policy.submit(spec, 0.0)
    assert [r.request_id for r in policy.release(0.0, EngineView(in_flight_cap=8)).releases] == ["r"]
    for now_s, tokens in reports:
        policy.on_tokens("r", now_s, tokens)
    (entry,) = policy.in_flight_entries()
    assert entry.first_token_s == first_token_s
    assert policy.pending_prefill_tokens() == pending_tokens
