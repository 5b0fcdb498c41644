"""Every rejection reason has exactly one gRPC code and one HTTP status, and retry hints only when useful."""

import grpc
import pytest

from sloguard.api.errors import RejectionReason
from sloguard.sidecar.errors import (
    RequestRejected,
    grpc_status_of,
    grpc_trailing_metadata,
    http_headers,
    http_status_of,
)

EXPECTED = {
    RejectionReason.TTFT_UNATTAINABLE: (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    RejectionReason.DEADLINE_UNATTAINABLE: (grpc.StatusCode.RESOURCE_EXHAUSTED, 503),
    RejectionReason.TPOT_UNATTAINABLE: (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    RejectionReason.QUEUE_FULL: (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    RejectionReason.DRAINING: (grpc.StatusCode.UNAVAILABLE, 503),
    RejectionReason.ENGINE_UNAVAILABLE: (grpc.StatusCode.UNAVAILABLE, 503),
    RejectionReason.INVALID_REQUEST: (grpc.StatusCode.INVALID_ARGUMENT, 400),
    RejectionReason.UNKNOWN_CLASS: (grpc.StatusCode.INVALID_ARGUMENT, 400),
}


def test_every_reason_is_mapped() -> None:
    assert set(EXPECTED) == set(RejectionReason)


@pytest.mark.parametrize("reason", list(RejectionReason))
def test_reason_maps_to_one_code_and_status(reason: RejectionReason) -> None:
    assert (grpc_status_of(reason), http_status_of(reason)) == EXPECTED[reason]


@pytest.mark.parametrize(
    ("reason", "retry_after_s", "metadata", "retry_header"),
    [
        (
            RejectionReason.QUEUE_FULL,
            2.5,
            (("sloguard-reason", "queue_full"), ("sloguard-retry-after-ms", "2500")),
            "3",
        ),
        (
            RejectionReason.DRAINING,
            None,
            (("sloguard-reason", "draining"), ("sloguard-retry-after-ms", "1000")),
            "1",
        ),
        (
            RejectionReason.TTFT_UNATTAINABLE,
            0.01,
            (("sloguard-reason", "ttft_unattainable"), ("sloguard-retry-after-ms", "10")),
            "1",
        ),
        (RejectionReason.UNKNOWN_CLASS, 5.0, (("sloguard-reason", "unknown_class"),), None),
    ],
)
def test_retry_hints_travel_only_for_retryable_reasons(
    reason: RejectionReason,
    retry_after_s: float | None,
    metadata: tuple[tuple[str, str], ...],
    retry_header: str | None,
) -> None:
    error = RequestRejected(reason, "why", retry_after_s)
    assert grpc_trailing_metadata(error) == metadata
    assert http_headers(error).get("Retry-After") == retry_header
    assert http_headers(error)["x-sloguard-reason"] == reason.value
