"""What the sidecar's request lifecycle needs from a scheduling policy.

The lifecycle (sidecar/lifecycle.py) speaks only this protocol; sidecar/policy_adapter.py builds an
implementation for a configured policy name (the scheduling core's policies, wrapped). Time is an
argument (`now_s`, monotonic seconds), so a policy behind this port is as pure as the core it wraps.

Call order per request: `on_arrival` (admit or reject) → zero or more `release` rounds until the id is
returned in `start` (or in `reject`, or `on_cancel` while queued) → `on_first_token`, `on_tokens`… →
`on_finish` exactly once for every started request (outcome completed, failed or cancelled).
The shape follows the scheduling core's `Policy` (sloguard.sidecar.core.policy: submit/estimate/release/
on_first_token/on_tokens/on_finish/cancel/snapshot), so the adapter over it stays a thin translation.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from sloguard.api.errors import RejectionReason
from sloguard.api.sloclass import OnUnattainable

FinishOutcome = Literal["completed", "failed", "cancelled"]


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One request as a policy sees it; targets in seconds, after class defaults and explicit overrides."""

    request_id: str
    slo_class: str
    ttft_s: float
    tpot_s: float
    deadline_s: float | None
    priority: int
    on_unattainable: OnUnattainable
    prompt_tokens: int
    max_tokens: int
    prompt_text: str | None
    arrival_s: float


@dataclass(frozen=True, slots=True)
class EngineView:
    """The sidecar's local view of its engine when a policy decides."""

    in_flight: int
    in_flight_cap: int
    in_flight_by_class: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Admission:
    """A policy's answer to an arrival (or an Estimate): admitted, or rejected with a reason."""

    admitted: bool
    reason: RejectionReason | None = None
    retry_after_s: float | None = None
    predicted_ttft_s: float | None = None
    predicted_tpot_s: float | None = None
    predicted_output_tokens: float | None = None
    explanation: str = ""


@dataclass(frozen=True, slots=True)
class Release:
    """One release round: ids to start now (in order), and queued ids the policy gives up on."""

    start: list[str] = field(default_factory=list)
    reject: list[tuple[str, RejectionReason]] = field(default_factory=list)
    engine_priority: Mapping[str, int | None] = field(default_factory=dict)
    """Per-id priority in OUR polarity (higher = more important); None: stamp none; absent: the class's."""
    gate_holds: Mapping[str, int] = field(default_factory=dict)
    """Per rejected id: release rounds in which the policy's TPOT gate held it back (absent: none)."""


class AdmissionPolicy(Protocol):
    name: str

    def estimate(self, request: PolicyRequest, now_s: float, view: EngineView) -> Admission:
        """Would `request` be admitted now? Changes no state."""
        ...

    def on_arrival(self, request: PolicyRequest, now_s: float, view: EngineView) -> Admission:
        """Admit (the request joins the policy's queue) or reject."""
        ...

    def release(self, now_s: float, view: EngineView) -> Release:
        """Queued requests to start now; the caller never starts more than the cap allows."""
        ...

    def on_cancel(self, request_id: str, now_s: float) -> None:
        """A queued request left before it started (client gone, deadline, drain)."""
        ...

    def on_first_token(self, request_id: str, now_s: float) -> None: ...

    def on_tokens(self, request_id: str, now_s: float, output_tokens: int) -> None:
        """`output_tokens`: cumulative tokens generated so far (non-decreasing)."""
        ...

    def on_finish(self, request_id: str, now_s: float, outcome: FinishOutcome, output_tokens: int) -> None:
        """A started request ended: completed, failed (engine), or cancelled (client, deadline)."""
        ...

    def queue_depth_by_class(self) -> dict[str, int]: ...
