"""Domain errors of the sidecar and their wire form: the ONE place reasons map to status codes.

The lifecycle raises `RequestRejected` (before a request starts) and `RequestFailed` (after); the gRPC
server and the HTTP front only translate them with `grpc_status_of` / `http_status_of` and the
metadata helpers below, so both fronts agree on codes, reasons and retry hints.
"""

import math
from dataclasses import dataclass

import grpc

from sloguard.api.errors import RejectionReason

REASON_METADATA_KEY = "sloguard-reason"
RETRY_AFTER_METADATA_KEY = "sloguard-retry-after-ms"
REASON_HEADER = "x-sloguard-reason"
GAVE_UP_QUEUED_DETAIL = "the policy gave up on the queued request"
"""The error message of a request the policy admitted, queued, then gave up on (as opposed to one refused
at arrival); `sloguard bench real-vllm` counts the two apart by it."""
GATE_HELD_DETAIL = "the TPOT gate held it back"
"""Added to `GAVE_UP_QUEUED_DETAIL` (`gave_up_queued_detail`) when the policy's TPOT gate had held the
request back: it waited because releasing it was predicted to break a running request's TPOT (or its
own), not for the queue ahead of it. `sloguard bench real-vllm` counts such requests per class by it."""


def gave_up_queued_detail(gate_holds: int) -> str:
    """The error message of a request given up while queued, after `gate_holds` release rounds in which
    the TPOT gate held it back."""
    if gate_holds <= 0:
        return GAVE_UP_QUEUED_DETAIL
    rounds = "round" if gate_holds == 1 else "rounds"
    return f"{GAVE_UP_QUEUED_DETAIL}; {GATE_HELD_DETAIL} in {gate_holds} release {rounds}"


_GRPC_CODES: dict[RejectionReason, grpc.StatusCode] = {
    RejectionReason.TTFT_UNATTAINABLE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    RejectionReason.DEADLINE_UNATTAINABLE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    RejectionReason.TPOT_UNATTAINABLE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    RejectionReason.QUEUE_FULL: grpc.StatusCode.RESOURCE_EXHAUSTED,
    RejectionReason.DRAINING: grpc.StatusCode.UNAVAILABLE,
    RejectionReason.ENGINE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    RejectionReason.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    RejectionReason.UNKNOWN_CLASS: grpc.StatusCode.INVALID_ARGUMENT,
}

_HTTP_STATUSES: dict[RejectionReason, int] = {
    RejectionReason.TTFT_UNATTAINABLE: 429,
    RejectionReason.DEADLINE_UNATTAINABLE: 503,  # matches the EPP: deadline expiry is 503
    RejectionReason.TPOT_UNATTAINABLE: 429,
    RejectionReason.QUEUE_FULL: 429,
    RejectionReason.DRAINING: 503,
    RejectionReason.ENGINE_UNAVAILABLE: 503,
    RejectionReason.INVALID_REQUEST: 400,
    RejectionReason.UNKNOWN_CLASS: 400,
}

DEFAULT_RETRY_AFTER_S = 1.0
_UNAVAILABLE_FAILURES = frozenset({"engine_unavailable", "draining"})  # retry elsewhere; else a broken stream


@dataclass
class RequestRejected(Exception):  # noqa: N818 (a domain outcome, not a bug)
    """The request was not started: invalid, over capacity, unattainable, draining or engine down."""

    reason: RejectionReason
    message: str
    retry_after_s: float | None = None

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.message}"

    @property
    def effective_retry_after_s(self) -> float | None:
        """The retry hint a client sees: only for retryable reasons, defaulting to one second."""
        if not self.reason.is_retryable:
            return None
        return self.retry_after_s if self.retry_after_s is not None else DEFAULT_RETRY_AFTER_S


@dataclass
class RequestFailed(Exception):  # noqa: N818
    """The request started but the engine failed (down, broken stream, error status mid-way)."""

    message: str
    engine_status: int | None = None
    reason: str = "engine_error"  # engine_error, engine_abort, engine_unavailable or draining

    @property
    def http_status(self) -> int:
        return 503 if self.reason in _UNAVAILABLE_FAILURES else 502

    @property
    def grpc_status(self) -> grpc.StatusCode:
        return (
            grpc.StatusCode.UNAVAILABLE if self.reason in _UNAVAILABLE_FAILURES else grpc.StatusCode.INTERNAL
        )

    def __str__(self) -> str:
        return self.message


def grpc_status_of(reason: RejectionReason) -> grpc.StatusCode:
    return _GRPC_CODES[reason]


def http_status_of(reason: RejectionReason) -> int:
    return _HTTP_STATUSES[reason]


def grpc_trailing_metadata(error: RequestRejected) -> tuple[tuple[str, str], ...]:
    metadata: list[tuple[str, str]] = [(REASON_METADATA_KEY, error.reason.value)]
    retry_s = error.effective_retry_after_s
    if retry_s is not None:
        metadata.append((RETRY_AFTER_METADATA_KEY, str(round(retry_s * 1000.0))))
    return tuple(metadata)


def http_headers(error: RequestRejected) -> dict[str, str]:
    headers = {REASON_HEADER: error.reason.value}
    retry_s = error.effective_retry_after_s
    if retry_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_s)))  # whole seconds, RFC 9110
    return headers


def openai_error_body(message: str, status: int, reason: str) -> dict[str, object]:
    """vLLM's error shape (reference/vllm-behaviour.md §5), plus our machine-readable reason."""
    kind = "BadRequestError" if status == 400 else "ServiceUnavailableError"
    if status == 429:
        kind = "RateLimitError"
    return {"error": {"message": message, "type": kind, "param": None, "code": status, "reason": reason}}
