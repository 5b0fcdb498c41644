"""What a policy knows about one request: its validated specification and how requests end.

Built by the sidecar's adapters (from a gRPC or HTTP call plus the SLO class) and by the simulator (from
a trace row); consumed by every policy (sloguard.sidecar.core.policy). Construction validates: a
malformed request never reaches a queue, it raises `InvalidRequestError` carrying the
`RejectionReason` to answer with. Pure: no I/O, times are seconds passed in.
"""

import math
from dataclasses import dataclass
from enum import StrEnum

from sloguard.api.errors import RejectionReason
from sloguard.api.sidecar_config import SLOClassConfig
from sloguard.api.sloclass import OnUnattainable


class InvalidRequestError(ValueError):
    """A request that cannot be scheduled as given; `reason` is what to answer the client with."""

    def __init__(self, message: str, reason: RejectionReason = RejectionReason.INVALID_REQUEST) -> None:
        super().__init__(message)
        self.reason = reason


class Outcome(StrEnum):
    """How a request ended. Every request ends exactly once, with one of these."""

    COMPLETED = "completed"  # the engine finished it (whether or not it met its SLO)
    REJECTED = "rejected"  # refused at arrival or given up while queued, with a RejectionReason
    CANCELLED = "cancelled"  # the client went away (queued or in flight)
    FAILED = "failed"  # the engine errored or the stream broke


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequestError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _positive(name: str, value: float) -> float:
    value = _finite(name, value)
    if value <= 0:
        raise InvalidRequestError(f"{name} must be > 0, got {value!r}")
    return value


def _count(name: str, value: int, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise InvalidRequestError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request as every policy sees it. Targets are durations in seconds from `arrival_s`.

    `ttft_s`, `tpot_s`, `deadline_s`, `class_priority` and `on_unattainable` normally come from the
    request's SLO class (`from_class`), with any per-request overrides already applied. `class_priority`
    uses the SLOClass polarity: higher is more important. `true_output_tokens` is only for oracle
    policies in benchmarks and simulations; a live sidecar leaves it None.

    `prefix_hashes` (with `prefix_block_tokens`, the tokens each hash covers) names the prompt's blocks
    for the engine's prefix cache, as Mooncake's `hash_ids` do (equal values = equal content); plain data
    the simulator hands its engine (`sloguard.sim.cosim`), None where the request carries none. No policy
    reads it.
    """

    request_id: str
    slo_class: str
    ttft_s: float
    tpot_s: float
    prompt_tokens: int
    max_tokens: int
    arrival_s: float
    deadline_s: float | None = None
    class_priority: int = 0
    on_unattainable: OnUnattainable = OnUnattainable.REJECT
    prompt_text: str | None = None
    true_output_tokens: int | None = None
    prefix_hashes: tuple[int, ...] | None = None
    prefix_block_tokens: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.request_id, str) or not self.request_id:
            raise InvalidRequestError(f"request_id must be a non-empty string, got {self.request_id!r}")
        if not isinstance(self.slo_class, str) or not self.slo_class:
            raise InvalidRequestError(
                f"slo_class must be a non-empty string, got {self.slo_class!r}",
                RejectionReason.UNKNOWN_CLASS,
            )
        _positive("ttft_s", self.ttft_s)
        _positive("tpot_s", self.tpot_s)
        if self.deadline_s is not None:
            _positive("deadline_s", self.deadline_s)
        _finite("arrival_s", self.arrival_s)
        _count("prompt_tokens", self.prompt_tokens, minimum=0)
        _count("max_tokens", self.max_tokens, minimum=1)
        if isinstance(self.class_priority, bool) or not isinstance(self.class_priority, int):
            raise InvalidRequestError(f"class_priority must be an integer, got {self.class_priority!r}")
        if not isinstance(self.on_unattainable, OnUnattainable):
            raise InvalidRequestError(f"on_unattainable must be OnUnattainable, got {self.on_unattainable!r}")
        if self.prompt_text is not None and not isinstance(self.prompt_text, str):
            raise InvalidRequestError("prompt_text must be a string or None")
        if self.true_output_tokens is not None:
            _count("true_output_tokens", self.true_output_tokens, minimum=0)
        if self.prefix_hashes is not None:
            if not isinstance(self.prefix_hashes, tuple) or not all(
                isinstance(h, int) and not isinstance(h, bool) for h in self.prefix_hashes
            ):
                raise InvalidRequestError(
                    f"prefix_hashes must be a tuple of integers, got {self.prefix_hashes!r}"
                )
            _count("prefix_block_tokens", self.prefix_block_tokens, minimum=1)

    @classmethod
    def from_class(
        cls,
        slo_class: SLOClassConfig,
        *,
        request_id: str,
        prompt_tokens: int,
        max_tokens: int,
        arrival_s: float,
        prompt_text: str | None = None,
        true_output_tokens: int | None = None,
        prefix_hashes: tuple[int, ...] | None = None,
        prefix_block_tokens: int = 0,
    ) -> "RequestSpec":
        """A request of `slo_class` with the class's targets."""
        return cls(
            request_id=request_id,
            slo_class=slo_class.name,
            ttft_s=slo_class.ttft_s,
            tpot_s=slo_class.tpot_s,
            deadline_s=slo_class.deadline_s,
            class_priority=slo_class.priority,
            on_unattainable=slo_class.on_unattainable,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            arrival_s=arrival_s,
            prompt_text=prompt_text,
            true_output_tokens=true_output_tokens,
            prefix_hashes=prefix_hashes,
            prefix_block_tokens=prefix_block_tokens,
        )

    @property
    def ttft_deadline_s(self) -> float:
        """Absolute time by which the first token must arrive."""
        return self.arrival_s + self.ttft_s

    @property
    def e2e_deadline_s(self) -> float | None:
        """Absolute time by which the last token must arrive, when the class has a deadline."""
        return None if self.deadline_s is None else self.arrival_s + self.deadline_s


def check_time(name: str, now_s: float) -> float:
    """Validate a time argument handed to a policy: finite seconds, else ValueError."""
    if isinstance(now_s, bool) or not isinstance(now_s, int | float) or not math.isfinite(now_s):
        raise ValueError(f"{name} must be a finite number of seconds, got {now_s!r}")
    return float(now_s)
