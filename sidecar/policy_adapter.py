"""Builds the configured scheduling policy behind the sidecar's policy port (sidecar/policy_port.py).

This is the ONE module of the sidecar's adapters that touches the scheduling core's policy interface
(`sloguard.sidecar.core.policy.Policy`, built by `sloguard.sidecar.core.registry.create_policy`), so the
core and the service can evolve and merge independently. The core is reached through `importlib` and
duck typing until both branches are merged (then the imports can become static); where the core or its
registry is absent, the FCFS pass-through serves and the substitution is reported (log line,
`GetState.policy`, `sloguard_policy_info{requested,effective}`).

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

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sloguard.api.errors import RejectionReason
from sloguard.api.sidecar_config import SidecarConfig
from sloguard.sidecar.policy_port import (
    Admission,
    AdmissionPolicy,
    EngineView,
    FcfsPassThrough,
    FinishOutcome,
    PolicyRequest,
    Release,
)

log = logging.getLogger(__name__)

CORE_REGISTRY = "sloguard.sidecar.core.registry"
CORE_POLICY = "sloguard.sidecar.core.policy"
CORE_REQUESTS = "sloguard.sidecar.core.requests"
CORE_LENGTHS = "sloguard.sidecar.core.simple_lengths"

CoreFactory = Callable[[SidecarConfig], Any]
"""Builds a core `Policy` for a configuration (default: the core registry's `create_policy`)."""


@dataclass(frozen=True)
class BuiltPolicy:
    policy: AdmissionPolicy
    requested: str
    effective: str
    predictor: str = "none"  # the output-length predictor behind the policy, "none" for the pass-through


class CorePolicyAdapter:
    """A core `Policy` (sloguard.sidecar.core.policy) behind the sidecar's port."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self.name = str(getattr(core.name, "value", core.name))
        self._policy_mod = importlib.import_module(CORE_POLICY)
        self._requests_mod = importlib.import_module(CORE_REQUESTS)

    def _spec(self, request: PolicyRequest) -> Any:
        return self._requests_mod.RequestSpec(
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

    def _decide(self, request: PolicyRequest, now_s: float, method: str) -> Admission:
        try:
            spec = self._spec(request)
        except self._requests_mod.InvalidRequestError as error:
            return Admission(admitted=False, reason=error.reason, explanation=str(error))
        decision = getattr(self.core, method)(spec, now_s)
        return _admission_of(decision)

    def estimate(self, request: PolicyRequest, now_s: float, view: EngineView) -> Admission:
        return self._decide(request, now_s, "estimate")

    def on_arrival(self, request: PolicyRequest, now_s: float, view: EngineView) -> Admission:
        return self._decide(request, now_s, "submit")

    def release(self, now_s: float, view: EngineView) -> Release:
        step = self.core.release(now_s, self._policy_mod.EngineView(in_flight_cap=view.in_flight_cap))
        start = [r.request_id for r in step.releases]
        priorities = {
            r.request_id: None if r.engine_priority is None else -int(r.engine_priority)
            for r in step.releases
        }
        reject = [(r.request_id, RejectionReason(r.reason)) for r in step.rejections]
        return Release(start=start, reject=reject, engine_priority=priorities)

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
        core_outcome = self._requests_mod.Outcome(outcome)
        self.core.on_finish(request_id, now_s, outcome=core_outcome, output_tokens=output_tokens)

    def queue_depth_by_class(self) -> dict[str, int]:
        return dict(self.core.snapshot().queued_by_class)


def _admission_of(decision: Any) -> Admission:
    reason = getattr(decision, "reason", None)
    if reason is not None:  # core Rejected
        return Admission(
            admitted=False,
            reason=RejectionReason(reason),
            retry_after_s=decision.retry_after_s,
            explanation=decision.detail,
        )
    demoted = " (demoted to best effort)" if getattr(decision, "demoted", False) else ""
    return Admission(
        admitted=True,
        predicted_ttft_s=decision.predicted_ttft_s,
        predicted_output_tokens=decision.predicted_output_tokens,
        explanation=f"admitted{demoted}",
    )


def _registry_factory() -> CoreFactory | None:
    """`create_policy` with the per-class running-mean length predictor (until a trained one is wired)."""
    try:
        registry = importlib.import_module(CORE_REGISTRY)
        lengths = importlib.import_module(CORE_LENGTHS)
    except ModuleNotFoundError:
        return None

    def create(config: SidecarConfig) -> Any:
        return registry.create_policy(config, predictor=lengths.ClassMeanLengths())

    return create


def build_policy(config: SidecarConfig, core_factory: CoreFactory | None = None) -> BuiltPolicy:
    """The configured policy behind the port; FCFS pass-through where the core cannot provide it.

    Raises ValueError (the core's PolicyParameterError) for bad `policy.parameters`.
    """
    requested = config.policy.name.value
    factory = core_factory or _registry_factory()
    if factory is not None:
        return BuiltPolicy(CorePolicyAdapter(factory(config)), requested, requested, predictor="class-mean")
    policy = FcfsPassThrough(max_queue_depth=config.limits.max_queue_depth)
    if requested != policy.name:
        log.warning("policy %r is not available in this build; serving with %r", requested, policy.name)
    return BuiltPolicy(policy=policy, requested=requested, effective=policy.name)
