"""Machine-readable rejection and failure reasons, shared by the sidecar, its clients and its metrics.

The sidecar maps each reason to one wire status in one place (gRPC code, HTTP status); the reason string
itself travels to the client (gRPC trailing metadata `sloguard-reason`, HTTP JSON body and the
`x-sloguard-reason` header) and labels the `sloguard_requests_total` counter.
"""

from enum import StrEnum


class RejectionReason(StrEnum):
    """Why a request was not served; values are stable API (metrics labels, client branching)."""

    TTFT_UNATTAINABLE = "ttft_unattainable"  # predicted wait already exceeds the TTFT slack
    DEADLINE_UNATTAINABLE = "deadline_unattainable"  # predicted end-to-end time exceeds the deadline
    TPOT_UNATTAINABLE = "tpot_unattainable"  # even alone, the engine cannot meet the TPOT target
    QUEUE_FULL = "queue_full"  # the local queue is at its configured depth
    DRAINING = "draining"  # the pod is shutting down; retry on another replica
    ENGINE_UNAVAILABLE = "engine_unavailable"  # the engine is down or not ready
    INVALID_REQUEST = "invalid_request"  # malformed input, unknown class, absurd lengths
    UNKNOWN_CLASS = "unknown_class"  # the named SLO class is not configured on this pool

    @property
    def is_retryable(self) -> bool:
        """Capacity-like reasons: the same request may succeed later or elsewhere."""
        return self not in {RejectionReason.INVALID_REQUEST, RejectionReason.UNKNOWN_CLASS}
