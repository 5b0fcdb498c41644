"""Builds the configured scheduling policy behind the sidecar's policy port (sidecar/policy_port.py).

This is the ONE module of the sidecar's adapters that touches the scheduling core's policy interface
(`sloguard.sidecar.core.policy.Policy`, built by `sloguard.sidecar.core.registry.create_policy`). Every
policy, fcfs included, is the core's; the lifecycle (sidecar/lifecycle.py) builds one output-length
predictor per process (`new_predictor`, the trained proxy model of predictor/model.py; it is not
thread-safe, and the sidecar runs one event loop) and hands it to every policy it builds, so the online
correction survives configuration reloads.

Online learning, as the core expects it: the lifecycle reports each in-flight request's first token and
cumulative token count (`on_first_token`, `on_tokens`: the latency model's online calibration) and its end
(`on_finish` with the actual output tokens: the core feeds completed requests to `predictor.observe`).

Translation (port → core):
- `on_arrival(PolicyRequest)` → `submit(RequestSpec, now_s)`; `Admitted`/`Rejected` → `Admission`;
  `InvalidRequestError` from building the spec → a rejection with its reason.
- `estimate` → `estimate`.
- `release(now_s, view)` → `release(now_s, EngineView(in_flight_cap=...))`; `ReleaseStep.releases` →
  `Release.start` in order, with vLLM-polarity priorities turned back into ours (the engine client turns
  them into vLLM's again), None kept as "stamp none"; `rejections` → `Release.reject`.
- `on_tokens(id, now_s, cumulative)` → same. `on_finish(..., "cancelled")` → `cancel(id)` (the core wants
  no `on_finish` after a cancel); completed/failed → `on_finish(outcome=Outcome(...))`.
- `on_cancel` (queued) → `cancel`. `queue_depth_by_class` → `snapshot().queued_by_class`.
"""

from collections.abc import Callable
from dataclasses import dataclass

from sloguard.api.errors import RejectionReason
from sloguard.api.sidecar_config import SidecarConfig
from sloguard.predictor import OutputLengthPredictor, load_default_predictor
from sloguard.sidecar.core import policy as core_policy
from sloguard.sidecar.core.registry import create_policy
from sloguard.sidecar.core.requests import InvalidRequestError, Outcome, RequestSpec
from sloguard.sidecar.policy_port import (
    Admission,
    AdmissionPolicy,
    EngineView,
    FinishOutcome,
    PolicyRequest,
    Release,
)

PREDICTOR_NAME = "proxy-mlp"
"""What GetState reports as the predictor: the trained proxy model with online correction."""

CoreFactory = Callable[[SidecarConfig, OutputLengthPredictor], core_policy.Policy]
"""Builds a core `Policy` for a configuration and predictor (default: the registry's `create_policy`)."""


@dataclass(frozen=True)
class BuiltPolicy:
    policy: AdmissionPolicy
    requested: str
    effective: str
    predictor: str = PREDICTOR_NAME


def new_predictor() -> OutputLengthPredictor:
    """The trained output-length predictor, fresh (no online state). One per event loop."""
    return load_default_predictor()


class CorePolicyAdapter:
    """A core `Policy` (sloguard.sidecar.core.policy) behind the sidecar's port."""

    def __init__(self, core: core_policy.Policy) -> None:
        self.core = core
        self.name = str(core.name.value)

    def _decide(self, request: PolicyRequest, now_s: float, *, submit: bool) -> Admission:
        try:
            spec = RequestSpec(
                request_id=request.request_id,
                slo_class=request.slo_class,
                ttft_s=request.ttft_s,
                tpot_s=request.tpot_s,
                deadline_s=request.deadline_s,
                class_priority=request.priority,
                on_unattainable=request.on_unattainable,
                prompt_tokens=request.prompt_tokens,
                max_tokens=request.max_tokens,
                arrival_s=request.arrival_s,
                prompt_text=request.prompt_text,
            )
        except InvalidRequestError as error:
            return Admission(admitted=False, reason=error.reason, explanation=str(error))
        decision = self.core.submit(spec, now_s) if submit else self.core.estimate(spec, now_s)
        return _admission_of(decision)

    def estimate(self, request: PolicyRequest, now_s: float, view: EngineView) -> Admission:
        return self._decide(request, now_s, submit=False)

    def on_arrival(self, request: PolicyRequest, now_s: float, view: EngineView) -> Admission:
        return self._decide(request, now_s, submit=True)

    def release(self, now_s: float, view: EngineView) -> Release:
        step = self.core.release(now_s, core_policy.EngineView(in_flight_cap=max(0, view.in_flight_cap)))
        start = [r.request_id for r in step.releases]
        priorities = {
            r.request_id: None if r.engine_priority is None else -int(r.engine_priority)
            for r in step.releases
        }
        reject = [(r.request_id, RejectionReason(r.reason)) for r in step.rejections]
        holds = {r.request_id: r.gate_holds for r in step.rejections if r.gate_holds > 0}
        return Release(start=start, reject=reject, engine_priority=priorities, gate_holds=holds)

    def on_cancel(self, request_id: str, now_s: float) -> None:
        self.core.cancel(request_id, now_s)

    def on_first_token(self, request_id: str, now_s: float) -> None:
        self.core.on_first_token(request_id, now_s)

    def on_tokens(self, request_id: str, now_s: float, output_tokens: int) -> None:
        self.core.on_tokens(request_id, now_s, output_tokens)

    def on_finish(self, request_id: str, now_s: float, outcome: FinishOutcome, output_tokens: int) -> None:
        if outcome == "cancelled":
            self.core.cancel(request_id, now_s)
            return
        self.core.on_finish(request_id, now_s, outcome=Outcome(outcome), output_tokens=output_tokens)

    def queue_depth_by_class(self) -> dict[str, int]:
        return dict(self.core.snapshot().queued_by_class)


def _admission_of(decision: core_policy.Decision) -> Admission:
    if isinstance(decision, core_policy.Rejected):
        return Admission(
            admitted=False,
            reason=RejectionReason(decision.reason),
            retry_after_s=decision.retry_after_s,
            explanation=decision.detail,
        )
    demoted = " (demoted to best effort)" if decision.demoted else ""
    return Admission(
        admitted=True,
        predicted_ttft_s=decision.predicted_ttft_s,
        predicted_output_tokens=decision.predicted_output_tokens,
        explanation=f"admitted{demoted}",
    )


def _create(config: SidecarConfig, predictor: OutputLengthPredictor) -> core_policy.Policy:
    return create_policy(config, predictor=predictor)


def build_policy(
    config: SidecarConfig, predictor: OutputLengthPredictor, core_factory: CoreFactory = _create
) -> BuiltPolicy:
    """The configured core policy behind the port, predicting output lengths with `predictor`.

    Raises ValueError (the core's PolicyParameterError) for bad `policy.parameters`.
    """
    name = config.policy.name.value
    return BuiltPolicy(CorePolicyAdapter(core_factory(config, predictor)), requested=name, effective=name)
