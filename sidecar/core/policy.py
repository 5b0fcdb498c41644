"""The scheduling-policy interface: the one contract the sidecar service and the simulator both drive.

Every policy (fcfs, sjf, edf, mooncake, sa, scorpio, sloguard; registered in
sloguard.sidecar.core.registry) implements `Policy`. The sidecar service drives it on the wall clock
from asyncio; the simulator drives it on virtual time. Neither the policy nor anything it calls reads a
clock: every call takes `now_s`, in seconds on one monotone timeline chosen by the driver.

Contract for drivers
--------------------
1. Build: `registry.create_policy(config, predictor=..., latency=..., seed=...)` with a
   `sloguard.api.SidecarConfig` (classes, `policy.name` and `policy.parameters`, `limits`), an
   `OutputLengthPredictor` and a `LatencyModel`. Bad parameters raise `PolicyParameterError` there.
2. Arrival: `submit(spec, now_s)` returns `Admitted` (the request now waits in the policy's queue) or
   `Rejected` (it has ended; answer the client with `reason`, and `retry_after_s` where given). A
   request naming a class the config does not have, or exceeding `limits`, is `Rejected`
   (UNKNOWN_CLASS / INVALID_REQUEST). A malformed request cannot even be built: `RequestSpec` raises
   `InvalidRequestError`. A duplicate `request_id` of a request still open, or a NaN/infinite `now_s`,
   raises `ValueError`: a driver bug, nothing is recorded. `estimate(spec, now_s)` answers the same
   question without changing any state.
3. Release: call `release(now_s, engine)` after every event that may free capacity or change order
   (arrival, first token, finish, cancel, a change of the in-flight cap or KV room) and at the latest at
   `next_wakeup_s(now_s)`. It returns a `ReleaseStep`:
   - `releases`: requests to send to the engine now, in this order, each with the vLLM `priority`
     to stamp (lower = earlier, vLLM polarity) or None to send none. Only policies whose
     `SchedulingPolicyName.stamps_engine_priority` is true ever return a priority. A released request is
     *in flight* from this moment.
   - `rejections`: queued requests the policy gave up on (they can no longer meet their class). They
     have ended; answer their clients.
   The policy never has more in flight than `min(engine.in_flight_cap, limits.max_in_flight)`, and the
   KV tokens it reserves for one step's releases never exceed `engine.kv_free_tokens` when known.
4. Progress of an in-flight request: `on_first_token(id, now_s)` once, then `on_tokens(id, now_s,
   output_tokens)` with the cumulative count of generated tokens (non-decreasing), as often as convenient.
   Policies use these to calibrate their latency models online.
5. End: `on_finish(id, now_s, outcome=COMPLETED|FAILED|CANCELLED, output_tokens=n)` once for every
   released request; `cancel(id, now_s)` for a client that went away, queued or in flight (for an
   in-flight one the driver aborts the engine stream itself and must not call `on_finish` afterwards).
   Ending a request that is not open raises `LedgerError`.
6. Observability: `snapshot()` (queue depth and in-flight per class), `ledger.counts()` (outcomes per
   class: every request ends exactly once — completed, rejected with a reason, cancelled, failed).
7. Shutdown: `shed(now_s, reason)` rejects every queued request (DRAINING, ENGINE_UNAVAILABLE).

Determinism: the same config, seed and sequence of calls give the same decisions.
"""

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from sloguard.api.errors import RejectionReason
from sloguard.api.policies import SchedulingPolicyName
from sloguard.sidecar.core.ledger import OutcomeLedger
from sloguard.sidecar.core.requests import Outcome, RequestSpec


class PolicyParameterError(ValueError):
    """`policy.parameters` holds an unknown key or a value of the wrong type or range."""


@dataclass(frozen=True, slots=True)
class EngineView:
    """What the driver knows about its engine when it asks for releases.

    `in_flight_cap`: the current adaptive concurrency cap (the local backpressure controller's value);
    the policy also never exceeds `limits.max_in_flight`. `kv_free_tokens`: KV-cache room in tokens,
    None when unknown (no KV gating then).
    """

    in_flight_cap: int
    kv_free_tokens: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.in_flight_cap, bool) or not isinstance(self.in_flight_cap, int):
            raise ValueError(f"in_flight_cap must be an integer, got {self.in_flight_cap!r}")
        if self.in_flight_cap < 0:
            raise ValueError(f"in_flight_cap must be >= 0, got {self.in_flight_cap}")
        if self.kv_free_tokens is not None and (
            isinstance(self.kv_free_tokens, bool) or not isinstance(self.kv_free_tokens, int)
        ):
            raise ValueError(f"kv_free_tokens must be an integer or None, got {self.kv_free_tokens!r}")


@dataclass(frozen=True, slots=True)
class Admitted:
    """The request waits in the policy's queue. `demoted`: it is served best-effort (after all others)."""

    request_id: str
    predicted_output_tokens: float
    predicted_ttft_s: float | None = None
    demoted: bool = False


@dataclass(frozen=True, slots=True)
class Rejected:
    """The request has ended without being served; `reason` goes on the wire and into the metrics."""

    request_id: str
    reason: RejectionReason
    retry_after_s: float | None = None
    detail: str = ""
    gate_holds: int = 0  # given up while queued: release rounds in which the TPOT gate held it back


Decision = Admitted | Rejected


@dataclass(frozen=True, slots=True)
class Release:
    """Send `request_id` to the engine now; `engine_priority` is vLLM's (lower = earlier) or None."""

    request_id: str
    engine_priority: int | None = None


@dataclass(frozen=True, slots=True)
class ReleaseStep:
    releases: tuple[Release, ...] = ()
    rejections: tuple[Rejected, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """Queue depth and in-flight counts per class (classes with none are absent)."""

    queued_by_class: Mapping[str, int] = field(default_factory=dict)
    in_flight_by_class: Mapping[str, int] = field(default_factory=dict)
    demoted_queued: int = 0
    kv_reserved_tokens: int = 0

    @property
    def queue_depth(self) -> int:
        return sum(self.queued_by_class.values())

    @property
    def in_flight(self) -> int:
        return sum(self.in_flight_by_class.values())


class Policy(ABC):
    """Admission, ordering and release of requests into one engine. See the module docstring."""

    name: ClassVar[SchedulingPolicyName]
    ledger: OutcomeLedger

    @abstractmethod
    def submit(self, spec: RequestSpec, now_s: float) -> Decision:
        """Admit `spec` into the queue or reject it (it then has ended)."""

    @abstractmethod
    def estimate(self, spec: RequestSpec, now_s: float) -> Decision:
        """What `submit` would answer now, without changing any state."""

    @abstractmethod
    def release(self, now_s: float, engine: EngineView) -> ReleaseStep:
        """Requests to start now (in order, with their vLLM priority) and queued requests given up on."""

    @abstractmethod
    def next_wakeup_s(self, now_s: float) -> float | None:
        """The latest time `release` must be called again if no event happens first; None: no need."""

    @abstractmethod
    def on_first_token(self, request_id: str, now_s: float) -> None:
        """The engine produced the first token of an in-flight request."""

    @abstractmethod
    def on_tokens(self, request_id: str, now_s: float, output_tokens: int) -> None:
        """The in-flight request has generated `output_tokens` tokens so far (cumulative)."""

    @abstractmethod
    def on_finish(self, request_id: str, now_s: float, *, outcome: Outcome, output_tokens: int) -> None:
        """An in-flight request ended: COMPLETED, FAILED, or CANCELLED (stream closed by the client)."""

    @abstractmethod
    def cancel(self, request_id: str, now_s: float) -> bool:
        """The client went away. Ends the request (queued or in flight); False if it was not open."""

    @abstractmethod
    def shed(self, now_s: float, reason: RejectionReason) -> tuple[Rejected, ...]:
        """Reject every queued request with `reason` (draining, engine down); in-flight ones stay."""

    @abstractmethod
    def snapshot(self) -> PolicySnapshot:
        """Queue depth and in-flight per class, now."""
