"""vLLM 0.32's `/metrics` families (names, types, labels, buckets) for the simulated server.

Fed by `sloguard.sim.server.driver` as the engine reports progress; exposed by the app at GET /metrics.
Semantics follow shared/reference/vllm-behaviour.md §4 and §3.7: aborted requests count in the token
counters, TTFT and inter-token histograms but never in request_success_total or the per-request
histograms; a preemption is counted when the victim next produces output. Latencies are in engine
(virtual) seconds, which equal wall seconds at --time-scale 1. Prefix caching, as vLLM 0.32 counts it
(in tokens): `prefix_cache_queries`/`_hits` at each admission of a never-preempted request (the engine's
counters), `prompt_tokens_cached_by_source{source="device"}` with the hits; `prompt_tokens_cached` and
`prompt_tokens_by_source{source="local_cache_hit"}` with each request's cached prompt tokens when its
prefill completes (the rest of its prompt under "local_compute"). External (connector) caches: always 0.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

TTFT_BUCKETS = [
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
]
ITL_BUCKETS = [
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
]
REQUEST_LATENCY_BUCKETS = [
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
]
ITERATION_TOKEN_BUCKETS = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
PREEMPTION_BUCKETS = [1, 2, 3, 4, 5, 10, 20]
N_BUCKETS = [1, 2, 5, 10, 20]
FINISHED_REASONS = ["stop", "length", "abort", "error", "repetition"]


def token_buckets(max_model_len: int) -> list[float]:
    """vLLM's 1-2-5 series capped at max_model_len."""
    out: list[float] = []
    mantissa, exponent = [1, 2, 5], 0
    while True:
        for m in mantissa:
            v = m * 10**exponent
            if v > max_model_len:
                return out
            out.append(float(v))
        exponent += 1


class VllmMetrics:
    """One registry with vLLM's families; every vllm: series is labelled engine="0", model_name
    (but vllm:cache_config_info, which real vLLM 0.32 labels with engine and its config only)."""

    def __init__(self, model_name: str, max_model_len: int, cache_info: dict[str, str]) -> None:  # noqa: PLR0915
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        labels = ["engine", "model_name"]
        self._lv = {"engine": "0", "model_name": model_name}
        lv = self._lv

        # every series exists from the start (vLLM exposes zeros), so children are created eagerly
        def counter(name: str, doc: str, extra: list[str] | None = None) -> Counter:
            c = Counter(name, doc, labels + (extra or []), registry=r)
            if not extra:
                c.labels(**lv)
            return c

        def gauge(name: str, doc: str, extra: list[str] | None = None) -> Gauge:
            g = Gauge(name, doc, labels + (extra or []), registry=r)
            if not extra:
                g.labels(**lv)
            return g

        def hist(name: str, doc: str, buckets: list[float]) -> Histogram:
            h = Histogram(name, doc, labels, buckets=buckets, registry=r)
            h.labels(**lv)
            return h

        tok = token_buckets(max_model_len)
        for name in [
            "estimated_flops_per_gpu",
            "estimated_read_bytes_per_gpu",
            "estimated_write_bytes_per_gpu",
            "external_prefix_cache_queries",
            "external_prefix_cache_hits",
            "mm_cache_queries",
            "mm_cache_hits",
        ]:
            counter(f"vllm:{name}", f"{name} (always 0 in the simulator).").labels(**lv)
        self.prefix_queries = counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
        ).labels(**lv)
        self.prefix_hits = counter(
            "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."
        ).labels(**lv)
        self.prompt_cached = counter(
            "vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external)."
        ).labels(**lv)
        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.waiting_by_reason = gauge(
            "vllm:num_requests_waiting_by_reason", "Waiting requests by reason.", ["reason"]
        )
        sleep = gauge("vllm:engine_sleep_state", "Engine sleep state.", ["sleep_state"])
        sleep.labels(**lv, sleep_state="awake").set(1)
        sleep.labels(**lv, sleep_state="weights_offloaded").set(0)
        sleep.labels(**lv, sleep_state="discard_all").set(0)
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        by_source = counter("vllm:prompt_tokens_by_source", "Prompt tokens by source.", ["source"])
        self.prompt_local = by_source.labels(**lv, source="local_compute")
        self.prompt_cache_hit = by_source.labels(**lv, source="local_cache_hit")
        by_source.labels(**lv, source="external_kv_transfer")
        cached = counter("vllm:prompt_tokens_cached_by_source", "Cached prompt tokens by source.", ["source"])
        self.prompt_cached_device = cached.labels(**lv, source="device")
        for source in ["host", "p2p", "disk", "external_unspecified"]:
            cached.labels(**lv, source=source)
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        self.success = counter(
            "vllm:request_success", "Count of successfully processed requests.", ["finished_reason"]
        )
        for reason in FINISHED_REASONS:
            self.success.labels(**lv, finished_reason=reason)
        rejections = Counter(
            "vllm:admission_rejections", "Admission rejections.", ["model_name", "reason"], registry=r
        )
        for reason in ["max_num_queued_reqs", "max_num_queued_tokens"]:
            rejections.labels(model_name=model_name, reason=reason)
        self.req_prompt_tokens = hist(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", tok
        )
        self.req_generation_tokens = hist(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", tok
        )
        self.iteration_tokens = hist(
            "vllm:iteration_tokens_total",
            "Histogram of number of tokens per engine_step.",
            [float(b) for b in ITERATION_TOKEN_BUCKETS],
        )
        self.max_gen_tokens = hist(
            "vllm:request_max_num_generation_tokens", "Max generation tokens in a request.", tok
        )
        self.params_n = hist(
            "vllm:request_params_n", "Histogram of the n request parameter.", [float(b) for b in N_BUCKETS]
        )
        self.params_max_tokens = hist(
            "vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", tok
        )
        self.ttft = hist(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS
        )
        self.itl = hist(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", ITL_BUCKETS
        )
        self.tpot = hist(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            ITL_BUCKETS,
        )
        self.e2e = hist(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.queue = hist(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.inference = hist(
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.prefill = hist(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.decode = hist(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.req_preemptions = hist(
            "vllm:request_num_preemptions",
            "Number of preemptions per request.",
            [float(b) for b in PREEMPTION_BUCKETS],
        )
        self.prefill_kv = hist(
            "vllm:request_prefill_kv_computed_tokens", "New KV tokens computed during prefill.", tok
        )
        # vLLM labels its config-info gauge with engine and the config, not with model_name (measured).
        info = Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            ["engine", *sorted(cache_info)],
            registry=r,
        )
        info.labels(engine=lv["engine"], **cache_info).set(1)

    def set_state(self, *, running: int, waiting: int, kv_usage: float) -> None:
        lv = self._lv
        self.running.labels(**lv).set(running)
        self.waiting.labels(**lv).set(waiting)
        self.waiting_by_reason.labels(**lv, reason="capacity").set(waiting)
        self.waiting_by_reason.labels(**lv, reason="deferred").set(0)
        self.kv_usage.labels(**lv).set(kv_usage)

    def labels(self) -> dict[str, str]:
        return dict(self._lv)
