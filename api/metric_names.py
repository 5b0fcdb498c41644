"""Names of the Prometheus series SLOGuard writes (sidecar) and reads (sidecar and vLLM).

The sidecar exports the `sloguard_*` series; the operator's Prometheus adapter
(`sloguard.operator.prometheus_adapter`) reads them together with vLLM's own series. Both sides import
the names from here, so a rename is one edit and a mismatch is impossible. Pure constants.

Labels: every sidecar series carries `pool` (the InferencePool name); per-class series also carry
`slo_class`. Pod-level series (`sloguard_in_flight_cap`) carry no `slo_class`. `namespace` (and `pod`)
come from the scrape configuration, and so do `pool` and `namespace` on vLLM's series (relabelled from
the pod's labels), see docs/autoscaling.md.
"""

from collections.abc import Mapping
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

TPOT_GATE_GIVEUPS_TOTAL = "sloguard_tpot_gate_giveups_total"
"""Counter {pool, slo_class}: requests given up while queued after the TPOT gate had held them back (also
counted in `sloguard_requests_total` under their rejection reason): what protecting running requests' TPOT
cost the queue."""

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


class MetricType(StrEnum):
    COUNTER = "counter"  # family names below end in `_total`, as queried
    GAUGE = "gauge"
    HISTOGRAM = "histogram"  # queried as `<name>_bucket`, `<name>_sum`, `<name>_count`


SIDECAR_FAMILIES: Mapping[str, MetricType] = {
    REQUESTS_TOTAL: MetricType.COUNTER,
    SLO_ATTAINED_TOTAL: MetricType.COUNTER,
    "sloguard_config_reloads_total": MetricType.COUNTER,
    TPOT_GATE_GIVEUPS_TOTAL: MetricType.COUNTER,
    QUEUE_DEPTH: MetricType.GAUGE,
    QUEUE_PREDICTED_TOKENS: MetricType.GAUGE,
    QUEUE_OLDEST_AGE_SECONDS: MetricType.GAUGE,
    IN_FLIGHT: MetricType.GAUGE,
    IN_FLIGHT_CAP: MetricType.GAUGE,
    "sloguard_in_flight_cap_overridden": MetricType.GAUGE,
    "sloguard_slo_attainment_ratio": MetricType.GAUGE,
    "sloguard_engine_up": MetricType.GAUGE,
    "sloguard_ready": MetricType.GAUGE,
    "sloguard_draining": MetricType.GAUGE,
    "sloguard_config_last_reload_success": MetricType.GAUGE,
    "sloguard_policy_info": MetricType.GAUGE,
    TTFT_SECONDS: MetricType.HISTOGRAM,
    TPOT_SECONDS: MetricType.HISTOGRAM,
    OUTPUT_TOKENS: MetricType.HISTOGRAM,
    PREDICTED_OUTPUT_TOKENS: MetricType.HISTOGRAM,
    "sloguard_queue_wait_seconds": MetricType.HISTOGRAM,
    "sloguard_sidecar_hop_seconds": MetricType.HISTOGRAM,
    "sloguard_event_loop_lag_seconds": MetricType.HISTOGRAM,
    "sloguard_engine_stream_interval_tokens": MetricType.HISTOGRAM,
}
"""Every family the sidecar exports (docs/metrics.md); a test compares it with the sidecar's registry."""

VLLM_FAMILIES: Mapping[str, MetricType] = {
    **dict.fromkeys(
        (
            VLLM_NUM_REQUESTS_RUNNING,
            VLLM_NUM_REQUESTS_WAITING,
            "vllm:num_requests_waiting_by_reason",
            "vllm:engine_sleep_state",
            VLLM_KV_CACHE_USAGE,
            "vllm:cache_config_info",
        ),
        MetricType.GAUGE,
    ),
    **dict.fromkeys(
        (
            "vllm:estimated_flops_per_gpu_total",
            "vllm:estimated_read_bytes_per_gpu_total",
            "vllm:estimated_write_bytes_per_gpu_total",
            "vllm:prefix_cache_queries_total",
            "vllm:prefix_cache_hits_total",
            "vllm:external_prefix_cache_queries_total",
            "vllm:external_prefix_cache_hits_total",
            "vllm:mm_cache_queries_total",
            "vllm:mm_cache_hits_total",
            VLLM_NUM_PREEMPTIONS_TOTAL,
            "vllm:prompt_tokens_total",
            "vllm:prompt_tokens_by_source_total",
            "vllm:prompt_tokens_cached_total",
            "vllm:prompt_tokens_cached_by_source_total",
            VLLM_GENERATION_TOKENS_TOTAL,
            "vllm:request_success_total",
            "vllm:admission_rejections_total",
        ),
        MetricType.COUNTER,
    ),
    **dict.fromkeys(
        (
            "vllm:request_prompt_tokens",
            "vllm:request_generation_tokens",
            "vllm:iteration_tokens_total",  # a histogram despite the suffix
            "vllm:request_max_num_generation_tokens",
            "vllm:request_params_n",
            "vllm:request_params_max_tokens",
            "vllm:time_to_first_token_seconds",
            "vllm:inter_token_latency_seconds",
            "vllm:request_time_per_output_token_seconds",
            "vllm:e2e_request_latency_seconds",
            "vllm:request_queue_time_seconds",
            "vllm:request_inference_time_seconds",
            "vllm:request_prefill_time_seconds",
            "vllm:request_decode_time_seconds",
            "vllm:request_num_preemptions",
            "vllm:request_prefill_kv_computed_tokens",
        ),
        MetricType.HISTOGRAM,
    ),
}
"""vLLM 0.32's `vllm:` families (reference/vllm-behaviour.md §4.2), checked on a real server (`vllm` tier)."""


def queryable_series(families: Mapping[str, MetricType]) -> frozenset[str]:
    """The series names a PromQL query can select from these families (histograms by their suffixes)."""
    names: set[str] = set()
    for name, kind in families.items():
        if kind is MetricType.HISTOGRAM:
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(name)
    return frozenset(names)
