"""The adapter translates between the lifecycle's policy port and the scheduling core's `Policy` interface.

The translation is checked against a recording test double returning the core's own decision types; the
wiring (every configured policy is the core's, with the trained predictor learning from completed
requests and the latency model calibrating from first tokens) against the real core.
"""

from dataclasses import dataclass, field, replace
from typing import Any, cast

import pytest

from sloguard.api.errors import RejectionReason
from sloguard.api.policies import SchedulingPolicyName
from sloguard.api.sidecar_config import SidecarConfig
from sloguard.api.sloclass import OnUnattainable
from sloguard.predictor import ProxyLengthPredictor
from sloguard.sidecar.core.base_policy import QueuePolicy
from sloguard.sidecar.core.policy import Admitted, Policy, PolicySnapshot, Rejected, Release, ReleaseStep
from sloguard.sidecar.policy_adapter import PREDICTOR_NAME, CorePolicyAdapter, build_policy, new_predictor
from sloguard.sidecar.policy_port import EngineView, FinishOutcome, PolicyRequest


@dataclass
class RecordingCore:
    """Admits `interactive`, rejects everything else; releases what it holds with vLLM priority -5."""

    name: SchedulingPolicyName = SchedulingPolicyName.SLOGUARD
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)

    def submit(self, spec: Any, now_s: float) -> Any:
        self.calls.append(("submit", spec.request_id, spec.class_priority, now_s))
        if spec.slo_class != "interactive":
            return Rejected(spec.request_id, RejectionReason.TTFT_UNATTAINABLE, 0.25, "too late")
        self.queued.append(spec.request_id)
        return Admitted(spec.request_id, predicted_output_tokens=42.0, predicted_ttft_s=0.1)

    def estimate(self, spec: Any, now_s: float) -> Any:
        return Admitted(spec.request_id, predicted_output_tokens=7.0)

    def release(self, now_s: float, engine: Any) -> Any:
        self.calls.append(("release", engine.in_flight_cap))
        ids, self.queued = self.queued, []
        return ReleaseStep(
            releases=tuple(Release(i, -5) for i in ids[:1]),
            rejections=tuple(
                Rejected(i, RejectionReason.DEADLINE_UNATTAINABLE, gate_holds=n)
                for n, i in enumerate(ids[1:], start=2)
            ),
        )

    def on_first_token(self, request_id: str, now_s: float) -> None:
        self.calls.append(("first", request_id))

    def on_tokens(self, request_id: str, now_s: float, output_tokens: int) -> None:
        self.calls.append(("tokens", request_id, output_tokens))

    def on_finish(self, request_id: str, now_s: float, *, outcome: Any, output_tokens: int) -> None:
        self.calls.append(("finish", request_id, str(outcome), output_tokens))

    def cancel(self, request_id: str, now_s: float) -> bool:
        self.calls.append(("cancel", request_id))
        return True

    def snapshot(self) -> Any:
        return PolicySnapshot({"interactive": len(self.queued)})


def _request(request_id: str, slo_class: str = "interactive", max_tokens: int = 8) -> PolicyRequest:
    return PolicyRequest(
        request_id=request_id,
        slo_class=slo_class,
        ttft_s=1.0,
        tpot_s=0.1,
        deadline_s=None,
        priority=10,
        on_unattainable=OnUnattainable.REJECT,
        prompt_tokens=5,
        max_tokens=max_tokens,
        prompt_text="hi",
        arrival_s=1.0,
    )


def test_translation_both_ways() -> None:
    core = RecordingCore()
    adapter = CorePolicyAdapter(cast(Policy, core))
    view = EngineView(in_flight=0, in_flight_cap=3)
    admitted = adapter.on_arrival(_request("a"), 1.0, view)
    assert admitted.admitted and admitted.predicted_output_tokens == 42.0 and admitted.predicted_ttft_s == 0.1
    adapter.on_arrival(_request("b"), 1.0, view)
    rejected = adapter.on_arrival(_request("c", "batch"), 1.0, view)
    assert (rejected.admitted, rejected.reason, rejected.retry_after_s) == (
        False,
        RejectionReason.TTFT_UNATTAINABLE,
        0.25,
    )
    assert adapter.queue_depth_by_class() == {"interactive": 2}
    step = adapter.release(2.0, view)
    assert step.start == ["a"] and step.engine_priority == {"a": 5}  # vLLM -5 back to our +5
    assert step.reject == [("b", RejectionReason.DEADLINE_UNATTAINABLE)]
    assert step.gate_holds == {"b": 2}  # release rounds the core's TPOT gate held b back
    adapter.on_first_token("a", 2.1)
    adapter.on_tokens("a", 2.2, 3)
    adapter.on_finish("a", 2.3, "completed", 3)
    adapter.on_finish("x", 2.3, "cancelled", 1)  # the core wants cancel(), not on_finish, for a cancel
    assert core.calls[-5:] == [
        ("release", 3),
        ("first", "a"),
        ("tokens", "a", 3),
        ("finish", "a", "completed", 3),
        ("cancel", "x"),
    ]


def test_a_spec_the_core_refuses_becomes_a_rejection() -> None:
    adapter = CorePolicyAdapter(cast(Policy, RecordingCore()))
    answer = adapter.on_arrival(_request("a", max_tokens=0), 1.0, EngineView(in_flight=0, in_flight_cap=1))
    assert not answer.admitted and answer.reason == RejectionReason.INVALID_REQUEST


def _config(policy: str) -> SidecarConfig:
    return SidecarConfig.model_validate(
        {
            "classes": [{"name": "interactive", "ttft_s": 1, "tpot_s": 0.1}],
            "policy": {"name": policy},
        }
    )


@pytest.mark.parametrize("name", [p.value for p in SchedulingPolicyName])
def test_every_configured_policy_is_the_cores(name: str) -> None:
    built = build_policy(_config(name), new_predictor())
    assert isinstance(built.policy, CorePolicyAdapter)
    assert (built.requested, built.effective, built.policy.name) == (name, name, name)
    assert built.predictor == PREDICTOR_NAME


def test_the_predictor_given_is_the_one_the_policy_uses() -> None:
    predictor = new_predictor()
    built = build_policy(_config("sloguard"), predictor)
    assert isinstance(built.policy, CorePolicyAdapter)
    assert isinstance(built.policy.core, QueuePolicy) and built.policy.core.predictor is predictor


def _serve(adapter: CorePolicyAdapter, request_id: str, now_s: float, ttft_s: float, tokens: int) -> str:
    """Admit, release, stream and end one request; returns how it ended for the core."""
    view = EngineView(in_flight=0, in_flight_cap=8)
    request = replace(_request(request_id, max_tokens=4096), arrival_s=now_s)
    assert adapter.on_arrival(request, now_s, view).admitted
    assert adapter.release(now_s, view).start == [request_id]
    adapter.on_first_token(request_id, now_s + ttft_s)
    adapter.on_tokens(request_id, now_s + ttft_s + 0.5, tokens)
    adapter.on_finish(request_id, now_s + ttft_s + 1.0, "completed", tokens)
    return "completed"


@pytest.mark.parametrize(
    ("outcome", "learns"), [("completed", True), ("failed", False), ("cancelled", False)]
)
def test_the_trained_predictor_learns_from_completed_requests_only(outcome: str, learns: bool) -> None:
    predictor = new_predictor()
    assert isinstance(predictor, ProxyLengthPredictor)
    adapter = build_policy(_config("sloguard"), predictor).policy
    assert isinstance(adapter, CorePolicyAdapter)
    view = EngineView(in_flight=0, in_flight_cap=8)
    before = predictor.bias("interactive")
    for i in range(5):
        request_id = f"r{i}"
        request = replace(_request(request_id, max_tokens=4096), arrival_s=float(i))
        assert adapter.on_arrival(request, float(i), view).admitted
        assert adapter.release(float(i), view).start == [request_id]
        adapter.on_first_token(request_id, i + 0.1)
        adapter.on_tokens(request_id, i + 0.5, 3000)  # far longer than a 5-token "hi" predicts
        adapter.on_finish(request_id, i + 0.9, cast(FinishOutcome, outcome), 3000)
    assert (predictor.bias("interactive") > before) is learns
    assert adapter.queue_depth_by_class() == {}


def test_first_tokens_calibrate_the_latency_model() -> None:
    adapter = build_policy(_config("sloguard"), new_predictor()).policy
    assert isinstance(adapter, CorePolicyAdapter)
    assert isinstance(adapter.core, QueuePolicy)
    latency = adapter.core.latency
    before = latency.prefill_scale
    for i in range(64):  # first tokens far slower than the default profile predicts
        _serve(adapter, f"r{i}", float(i) * 10, ttft_s=0.9, tokens=20)
    assert latency.prefill_scale > before
