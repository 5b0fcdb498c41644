"""Names of the Prometheus series SLOGuard writes (sidecar) and reads (sidecar and vLLM).

The sidecar exports the `sloguard_*` series; the operator's Prometheus adapter
(`sloguard.operator.prometheus_adapter`) reads them together with vLLM's own series. Both sides import
the names from here, so a rename is one edit and a mismatch is impossible. Pure constants.

Labels: every sidecar series carries `pool` (the InferencePool name); per-class series also carry
`slo_class`. Pod-level series (`sloguard_in_flight_cap`) carry no `slo_class`. `namespace` (and `pod`)
come from the scrape configuration, and so do `pool` and `namespace` on vLLM's series (relabelled from
the pod's labels), see docs/autoscaling.md.
"""

from enum import StrEnum

# ---- labels -------------------------------------------------------------------------------------------
LABEL_POOL = "pool"
LABEL_NAMESPACE = "namespace"
LABEL_SLO_CLASS = "slo_class"
LABEL_OUTCOME = "outcome"
LABEL_REASON = "reason"  # why it did not complete (docs/metrics.md); empty for completed requests


class RequestOutcome(StrEnum):
    """How a request ended; every request ends exactly once (DESIGN.md)."""

    COMPLETED = "completed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"  # by the client
    FAILED = "failed"  # engine error


# ---- sidecar series (per pool and class unless said otherwise) -----------------------------------------
REQUESTS_TOTAL = "sloguard_requests_total"
"""Counter {pool, slo_class, outcome, reason}: requests that ended, one increment each."""

SLO_ATTAINED_TOTAL = "sloguard_slo_attained_total"
"""Counter {pool, slo_class}: completed requests that met their TTFT, TPOT (and deadline)."""

QUEUE_DEPTH = "sloguard_queue_depth"
"""Gauge {pool, slo_class}: requests waiting in the sidecar's queue."""

QUEUE_PREDICTED_TOKENS = "sloguard_queue_predicted_tokens"
"""Gauge {pool, slo_class}: sum of the predicted output tokens of the queued requests."""

QUEUE_OLDEST_AGE_SECONDS = "sloguard_queue_oldest_age_seconds"
"""Gauge {pool, slo_class}: age of the oldest queued request (0 when the queue is empty)."""

IN_FLIGHT = "sloguard_in_flight"
"""Gauge {pool, slo_class}: requests released into the engine and not yet finished."""

IN_FLIGHT_CAP = "sloguard_in_flight_cap"
"""Gauge {pool} per pod: the sidecar's current adaptive in-flight cap (local backpressure)."""

TTFT_SECONDS = "sloguard_ttft_seconds"
"""Histogram {pool, slo_class}: time to first token as the client saw it (queueing included)."""

TPOT_SECONDS = "sloguard_tpot_seconds"
"""Histogram {pool, slo_class}: mean time per output token of each completed request."""

OUTPUT_TOKENS = "sloguard_output_tokens"
"""Histogram {pool, slo_class}: output tokens of each completed request."""

PREDICTED_OUTPUT_TOKENS = "sloguard_predicted_output_tokens"
"""Histogram {pool, slo_class}: output tokens predicted at admission, observed when the request completes."""

# ---- vLLM series (V1 names, reference/anchors.md §6.4) --------------------------------------------------
VLLM_NUM_REQUESTS_RUNNING = "vllm:num_requests_running"
VLLM_NUM_REQUESTS_WAITING = "vllm:num_requests_waiting"
VLLM_KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"
"""Gauge in [0, 1] (the name says perc, the value is a fraction)."""
VLLM_NUM_PREEMPTIONS_TOTAL = "vllm:num_preemptions_total"
VLLM_GENERATION_TOKENS_TOTAL = "vllm:generation_tokens_total"

SIDECAR_SERIES = (
    REQUESTS_TOTAL,
    SLO_ATTAINED_TOTAL,
    QUEUE_DEPTH,
    QUEUE_PREDICTED_TOKENS,
    QUEUE_OLDEST_AGE_SECONDS,
    IN_FLIGHT,
    IN_FLIGHT_CAP,
    TTFT_SECONDS,
    TPOT_SECONDS,
    OUTPUT_TOKENS,
    PREDICTED_OUTPUT_TOKENS,
)
