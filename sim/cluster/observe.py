"""What the cluster simulation reports to the autoscaler: a `PoolSnapshot` built from simulated state.

The operator builds the same snapshot from Prometheus (docs/autoscaling.md, "PromQL"); here each field is
computed from the simulated replicas with the same meaning and windows: per-class rates, attainment and
TTFT/TPOT quantiles over the requests that *ended* in the last `rate_window_s` (60 s), output-length
mean and standard deviation, and the mean length predicted for the same completed requests, over the
last `tokens_window_s` (600 s), queue depths and in-flight counts
now, KV usage mean/max over the pods' engines, preemption and generated-token rates over the rate
window. Pods with a running sidecar (ready or draining) are scraped; `replicas` counts ready
(not draining) and starting pods as the Deployment would. Called by `sloguard.sim.cluster.cluster`.
"""

import bisect
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sloguard.api.sidecar_config import SLOClassConfig
from sloguard.operator.core.autoscaling import ClassSnapshot, PoolSnapshot, ReplicaCounts
from sloguard.sidecar.core.requests import Outcome, RequestSpec
from sloguard.sim.cosim import RequestRecord


@dataclass(frozen=True, slots=True)
class EndedRequest:
    """One ended request as the metrics see it (the sidecar's counters and histograms)."""

    end_s: float
    slo_class: str
    met: bool
    cancelled: bool
    ttft_s: float | None
    tpot_s: float | None
    output_tokens: int
    completed: bool
    predicted_tokens: float | None = None  # output tokens predicted at admission (sidecar histogram)


def ended_request(
    record: RequestRecord, spec: RequestSpec, predicted_tokens: float | None = None
) -> EndedRequest:
    end = record.finish_s if record.finish_s is not None else record.arrival_s
    return EndedRequest(
        end_s=end,
        slo_class=record.slo_class,
        met=record.met(spec),
        cancelled=record.outcome is Outcome.CANCELLED,
        ttft_s=record.ttft_s,
        tpot_s=record.tpot_s if record.output_tokens > 1 else None,
        output_tokens=record.output_tokens,
        completed=record.outcome is Outcome.COMPLETED,
        predicted_tokens=predicted_tokens,
    )


def quantile(sorted_values: Sequence[float], q: float) -> float | None:
    """Linear-interpolation quantile of sorted values; None when there are none."""
    if not sorted_values:
        return None
    pos = q * (len(sorted_values) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


@dataclass
class EndedWindow:
    """Requests that ended, kept for the longest window; appended in non-decreasing end time."""

    keep_s: float = 600.0
    items: deque[EndedRequest] = field(default_factory=deque)

    def add(self, item: EndedRequest) -> None:
        self.items.append(item)

    def prune(self, now_s: float) -> None:
        while self.items and self.items[0].end_s < now_s - self.keep_s:
            self.items.popleft()

    def since(self, since_s: float) -> Iterable[EndedRequest]:
        return (e for e in self.items if e.end_s > since_s)


@dataclass
class CounterSeries:
    """Samples of a monotone counter; `rate` is Prometheus' rate() over a window, in units per second."""

    samples: list[tuple[float, float]] = field(default_factory=list)

    def add(self, t_s: float, value: float) -> None:
        self.samples.append((t_s, value))

    def rate(self, now_s: float, window_s: float) -> float | None:
        if len(self.samples) < 2:
            return None
        times = [t for t, _ in self.samples]
        i = max(0, bisect.bisect_left(times, now_s - window_s))
        t0, v0 = self.samples[i]
        t1, v1 = self.samples[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 else None


@dataclass(frozen=True, slots=True)
class PodState:
    """The per-pod numbers a snapshot sums (sidecar gauges and vLLM gauges)."""

    queued_by_class: dict[str, int]
    in_flight_by_class: dict[str, int]
    in_flight_cap: int
    kv_usage: float
    engine_waiting: int
    engine_running: int


@dataclass(frozen=True, slots=True)
class GatewayQueue:
    """Requests of one class waiting in front of the pool (the batch backlog), reported as its queue."""

    slo_class: str
    depth: int
    predicted_tokens: float
    oldest_age_s: float | None


def build_snapshot(
    *,
    pool: str,
    now_s: float,
    classes: Sequence[SLOClassConfig],
    replicas: ReplicaCounts,
    pods: Sequence[PodState],
    ended: EndedWindow,
    gateway: Sequence[GatewayQueue],
    sidecar_queue_predicted_tokens: dict[str, float],
    oldest_open_age_s: dict[str, float],
    preemptions: CounterSeries,
    generated_tokens: CounterSeries,
    rate_window_s: float = 60.0,
    tokens_window_s: float = 600.0,
) -> PoolSnapshot:
    recent = [e for e in ended.since(now_s - rate_window_s)]
    lengths = [e for e in ended.since(now_s - tokens_window_s)]
    gateway_by_class = {g.slo_class: g for g in gateway}
    class_snaps = []
    for cls in classes:
        mine = [e for e in recent if e.slo_class == cls.name]
        judged = [e for e in mine if not e.cancelled]
        ttfts = sorted(e.ttft_s for e in mine if e.ttft_s is not None)
        tpots = sorted(e.tpot_s for e in mine if e.tpot_s is not None)
        done = [e for e in lengths if e.slo_class == cls.name and e.completed]
        outs = [float(e.output_tokens) for e in done]
        mean = sum(outs) / len(outs) if outs else None
        preds = [e.predicted_tokens for e in done if e.predicted_tokens is not None]
        std = math.sqrt(sum((x - mean) ** 2 for x in outs) / len(outs)) if outs and mean is not None else None
        gate = gateway_by_class.get(cls.name)
        queued = sum(p.queued_by_class.get(cls.name, 0) for p in pods) + (gate.depth if gate else 0)
        predicted = sidecar_queue_predicted_tokens.get(cls.name, 0.0) + (
            gate.predicted_tokens if gate else 0.0
        )
        class_snaps.append(
            ClassSnapshot(
                name=cls.name,
                arrival_rate_rps=len(mine) / rate_window_s,
                queue_depth=float(queued),
                in_flight=float(sum(p.in_flight_by_class.get(cls.name, 0) for p in pods)),
                queue_predicted_tokens=predicted if queued else 0.0,
                queue_oldest_age_s=oldest_open_age_s.get(cls.name) if queued else None,
                ttft_p50_s=quantile(ttfts, 0.5),
                ttft_p99_s=quantile(ttfts, 0.99),
                tpot_p50_s=quantile(tpots, 0.5),
                tpot_p99_s=quantile(tpots, 0.99),
                attainment=sum(e.met for e in judged) / len(judged) if judged else None,
                output_tokens_mean=mean,
                output_tokens_std=std,
                predicted_tokens_mean=sum(preds) / len(preds) if preds else None,
            )
        )
    kv = [p.kv_usage for p in pods]
    return PoolSnapshot(
        pool=pool,
        replicas=replicas,
        classes=tuple(class_snaps),
        observed_at_s=now_s,
        scraped_pods=len(pods),
        in_flight_cap_total=float(sum(p.in_flight_cap for p in pods)) if pods else None,
        kv_usage_mean=sum(kv) / len(kv) if kv else None,
        kv_usage_max=max(kv) if kv else None,
        preemptions_per_s=preemptions.rate(now_s, rate_window_s),
        engine_waiting=float(sum(p.engine_waiting for p in pods)) if pods else None,
        engine_running=float(sum(p.engine_running for p in pods)) if pods else None,
        generation_tokens_per_s=generated_tokens.rate(now_s, rate_window_s),
    )
