"""What the autoscaler sees of one pool at one moment: the decision core's input, as plain data.

The Prometheus adapter (`sloguard.operator.prometheus_adapter`) builds a `PoolSnapshot` from the sidecar
and vLLM series; the cluster simulation builds one from its virtual replicas. Every measured number is
`None` when it could not be measured, so the policies can tell "zero" from "unknown" and never scale on
nothing. Pure data, no I/O.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ClassSnapshot:
    """Measurements of one SLO class across the pool's pods (sums over pods unless said otherwise)."""

    name: str
    arrival_rate_rps: float | None = None  # requests ending per second (every request ends once)
    queue_depth: float | None = None  # requests waiting in the sidecars
    in_flight: float | None = None  # requests inside the engines
    queue_predicted_tokens: float | None = None  # predicted output tokens of the queued requests
    queue_oldest_age_s: float | None = None  # max over pods: the longest a queued request has waited
    ttft_p50_s: float | None = None
    ttft_p99_s: float | None = None
    tpot_p50_s: float | None = None
    tpot_p99_s: float | None = None
    attainment: float | None = None  # fraction of ended requests meeting the SLO, over the rate window
    output_tokens_mean: float | None = None  # per completed request
    output_tokens_std: float | None = None  # per completed request
    predicted_tokens_mean: float | None = None  # predicted at admission, per completed request (same window)

    @property
    def demand(self) -> float | None:
        """Requests that want an engine slot now: in flight plus queued; None when either is unknown."""
        if self.in_flight is None or self.queue_depth is None:
            return None
        return self.in_flight + self.queue_depth


@dataclass(frozen=True, slots=True)
class ReplicaCounts:
    """Replicas as Kubernetes reports them (the operator fills this from the Deployment)."""

    current: int  # replicas asked for now (the /scale value): ready + starting
    ready: int  # pods ready to serve
    starting: int = 0  # created but not ready yet (image pull, model load)

    def __post_init__(self) -> None:
        if min(self.current, self.ready, self.starting) < 0:
            raise ValueError(f"replica counts must be non-negative: {self}")


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """One pool's state; `available` False means the numbers could not be read at all."""

    pool: str
    replicas: ReplicaCounts
    classes: tuple[ClassSnapshot, ...] = ()
    available: bool = True
    unavailable_reason: str = ""  # why not available, for humans
    unavailable_kind: str = ""  # CamelCase: MetricsMissing, PrometheusError
    observed_at_s: float | None = None  # time of the newest sidecar sample used
    scraped_pods: int | None = None  # pods whose sidecar series are present
    in_flight_cap_total: float | None = None  # sum over pods of the sidecars' adaptive caps
    kv_usage_mean: float | None = None  # vLLM KV cache usage in [0, 1], mean over pods
    kv_usage_max: float | None = None
    preemptions_per_s: float | None = None  # vLLM preemptions, pool total
    engine_waiting: float | None = None  # vLLM's own waiting queue, pool total
    engine_running: float | None = None
    generation_tokens_per_s: float | None = None  # vLLM output tokens per second, pool total
    notes: tuple[str, ...] = field(default=())  # partial-data remarks from the adapter

    def class_named(self, name: str) -> ClassSnapshot | None:
        return next((c for c in self.classes if c.name == name), None)

    def age_s(self, now_s: float) -> float | None:
        return None if self.observed_at_s is None else now_s - self.observed_at_s

    @property
    def mean_cap_per_pod(self) -> float | None:
        if self.in_flight_cap_total is None or not self.scraped_pods:
            return None
        return self.in_flight_cap_total / self.scraped_pods
