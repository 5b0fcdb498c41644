"""The sidecar's Prometheus series (documented in docs/metrics.md), on a registry owned by one sidecar.

The lifecycle, the config watcher and the engine health probe update them; the metrics server
(sidecar/metrics_server.py) exposes the registry. Every series carries `pool`; per-class series carry
`slo_class`. Attainment is computed over each class's `attainment_window_s`: requests that ended in the
window and met their targets, over all that ended (rejected and failed count as missed, cancelled are
left out because the client chose to leave).

The names the autoscaler's Prometheus adapter reads come from `sloguard.api.metric_names` (one edit renames
both sides). Every configured class's per-class gauges exist from start-up (at 0), so a query over an idle
class finds a series; `sloguard_slo_attainment_ratio` appears once a request of the class has ended.
"""

import contextlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sloguard.api import metric_names as names
from sloguard.api.metric_names import RequestOutcome
from sloguard.sidecar.hop_timing import HOP_ORDER, HopTimer, LatencyWindow

LATENCY_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
)
TPOT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0)
HOP_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
TOKEN_BUCKETS = (1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
STREAM_INTERVAL_BUCKETS = (1, 2, 4, 8, 16)  # tokens per engine chunk (sidecar/core/stream_interval.py)


@dataclass(frozen=True)
class ClassGauges:
    """One class's labelled gauge children (looking a child up by labels on every release round is costly)."""

    queue_depth: Gauge
    queue_predicted_tokens: Gauge
    queue_oldest_age: Gauge
    in_flight: Gauge


@dataclass(frozen=True)
class PoolGauges:
    in_flight_cap: Gauge
    cap_overridden: Gauge


class SidecarMetrics:
    def __init__(self, pool: str) -> None:
        self.pool = pool
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            _counter(names.REQUESTS_TOTAL),
            "Requests that ended, by outcome (completed, rejected, cancelled, failed) and reason.",
            ["pool", "slo_class", "outcome", "reason"],
            registry=r,
        )
        self.slo_met = Counter(
            _counter(names.SLO_ATTAINED_TOTAL),
            "Completed requests that met TTFT, TPOT and deadline; rate() of it is the goodput.",
            ["pool", "slo_class"],
            registry=r,
        )
        self.tpot_gate_giveups = Counter(
            _counter(names.TPOT_GATE_GIVEUPS_TOTAL),
            "Requests given up while queued after the TPOT gate had held them back.",
            ["pool", "slo_class"],
            registry=r,
        )
        self.ttft = Histogram(
            names.TTFT_SECONDS,
            "Time to first token seen by the sidecar, from arrival to the first token's chunk.",
            ["pool", "slo_class"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.tpot = Histogram(
            names.TPOT_SECONDS,
            "Mean time per output token after the first, per completed request.",
            ["pool", "slo_class"],
            buckets=TPOT_BUCKETS_S,
            registry=r,
        )
        self.queue_wait = Histogram(
            "sloguard_queue_wait_seconds",
            "Time between admission and release to the engine.",
            ["pool", "slo_class"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.attainment = Gauge(
            "sloguard_slo_attainment_ratio",
            "Fraction of requests ending in the class's attainment window that met their SLO.",
            ["pool", "slo_class"],
            registry=r,
        )
        self.queue_depth = Gauge(
            names.QUEUE_DEPTH,
            "Admitted requests waiting in the sidecar.",
            ["pool", "slo_class"],
            registry=r,
        )
        self.queue_predicted_tokens = Gauge(
            names.QUEUE_PREDICTED_TOKENS,
            "Sum of the output tokens predicted at admission for the requests waiting in the sidecar.",
            ["pool", "slo_class"],
            registry=r,
        )
        self.queue_oldest_age = Gauge(
            names.QUEUE_OLDEST_AGE_SECONDS,
            "Age of the oldest request waiting in the sidecar (0 when none waits).",
            ["pool", "slo_class"],
            registry=r,
        )
        self.in_flight = Gauge(
            names.IN_FLIGHT, "Requests released to the engine.", ["pool", "slo_class"], registry=r
        )
        self.in_flight_cap = Gauge(names.IN_FLIGHT_CAP, "Current in-flight cap.", ["pool"], registry=r)
        self.cap_overridden = Gauge(
            "sloguard_in_flight_cap_overridden", "1 while SetLimits pins the cap.", ["pool"], registry=r
        )
        self.predicted_tokens = Histogram(
            names.PREDICTED_OUTPUT_TOKENS,
            "Output length predicted at admission, for requests that completed.",
            ["pool", "slo_class"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.actual_tokens = Histogram(
            names.OUTPUT_TOKENS,
            "Output tokens of requests that completed.",
            ["pool", "slo_class"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.engine_up = Gauge(
            "sloguard_engine_up", "1 when the engine answers its health check.", ["pool"], registry=r
        )
        self.ready = Gauge("sloguard_ready", "1 while the sidecar reports ready.", ["pool"], registry=r)
        self.draining = Gauge("sloguard_draining", "1 once draining has started.", ["pool"], registry=r)
        self.config_reloads = Counter(
            "sloguard_config_reloads", "Configuration reloads, by result.", ["pool", "result"], registry=r
        )
        self.config_last_reload_ok = Gauge(
            "sloguard_config_last_reload_success",
            "1 when the last configuration file seen was valid and is in use.",
            ["pool"],
            registry=r,
        )
        self.policy_info = Gauge(
            "sloguard_policy_info",
            "1 for the configured (requested) and effective policy.",
            ["pool", "requested", "effective"],
            registry=r,
        )
        self.hop_seconds = Histogram(
            "sloguard_sidecar_hop_seconds",
            "Time an HTTP request spent in each hop up to its first client write (sidecar/hop_timing.py).",
            ["pool", "hop"],
            buckets=HOP_BUCKETS_S,
            registry=r,
        )
        self.loop_lag = Histogram(
            "sloguard_event_loop_lag_seconds",
            "How late the sidecar's event loop ran a timer (sidecar/loop_lag.py): time callbacks wait.",
            ["pool"],
            buckets=HOP_BUCKETS_S,
            registry=r,
        )
        self.stream_interval = Histogram(
            "sloguard_engine_stream_interval_tokens",
            "Tokens per chunk the engine was asked to pack, per request sent (1: token by token; "
            "sidecar/core/stream_interval.py).",
            ["pool"],
            buckets=STREAM_INTERVAL_BUCKETS,
            registry=r,
        )
        self._stream_interval_child = self.stream_interval.labels(pool)
        self.hop_windows = {hop: LatencyWindow() for hop in HOP_ORDER}  # GET /debug/hops
        self._hop_children = {hop: self.hop_seconds.labels(pool, hop.value) for hop in HOP_ORDER}
        self._loop_lag_child = self.loop_lag.labels(pool)
        self.loop_lag_window = LatencyWindow()
        self.pool_gauges = PoolGauges(self.in_flight_cap.labels(pool), self.cap_overridden.labels(pool))
        self._class_gauges: dict[str, ClassGauges] = {}
        self._windows: dict[str, deque[tuple[float, bool]]] = {}
        self._window_met: dict[str, int] = {}  # requests in each class's window that met their SLO
        self._classes: set[str] = set()

    @property
    def class_gauges(self) -> tuple[Gauge, ...]:
        """The per-class gauges that exist for every configured class from start-up."""
        return (
            self.queue_depth,
            self.queue_predicted_tokens,
            self.queue_oldest_age,
            self.in_flight,
        )

    def set_classes(self, classes: Iterable[str]) -> None:
        """Export every configured class's gauges (at 0 until set) and drop those of removed classes."""
        wanted = set(classes)
        for gone in self._classes - wanted:
            for gauge in (*self.class_gauges, self.attainment):
                with contextlib.suppress(KeyError):  # never set
                    gauge.remove(self.pool, gone)
            self._windows.pop(gone, None)
            self._class_gauges.pop(gone, None)
            self._window_met.pop(gone, None)
        for new in wanted - self._classes:
            for gauge in self.class_gauges:
                gauge.labels(self.pool, new).set(0)
            self.slo_met.labels(self.pool, new)  # the counter at 0, so rate() over it is defined
        self._classes = wanted

    def class_gauges_of(self, slo_class: str) -> ClassGauges:
        """The class's gauge children, looked up once (until `set_classes` removes the class)."""
        gauges = self._class_gauges.get(slo_class)
        if gauges is None:
            pool = self.pool
            gauges = self._class_gauges[slo_class] = ClassGauges(
                self.queue_depth.labels(pool, slo_class),
                self.queue_predicted_tokens.labels(pool, slo_class),
                self.queue_oldest_age.labels(pool, slo_class),
                self.in_flight.labels(pool, slo_class),
            )
        return gauges

    def record_end(
        self,
        slo_class: str,
        *,
        outcome: RequestOutcome | str,
        reason: str,
        met_slo: bool,
        now_s: float,
        window_s: float,
    ) -> None:
        """Count one request's end. Raises ValueError for an outcome that is not a `RequestOutcome`."""
        outcome = RequestOutcome(outcome)
        self.requests.labels(self.pool, slo_class, outcome.value, reason).inc()
        if met_slo:
            self.slo_met.labels(self.pool, slo_class).inc()
        if outcome is RequestOutcome.CANCELLED:
            return
        window = self._windows.setdefault(slo_class, deque())
        window.append((now_s, met_slo))
        met = self._window_met.get(slo_class, 0) + met_slo  # a running count: O(1) per request, not O(window)
        while window and window[0][0] < now_s - window_s:
            met -= window.popleft()[1]
        self._window_met[slo_class] = met
        self.attainment.labels(self.pool, slo_class).set(met / len(window))

    def observe_hops(self, timer: HopTimer) -> None:
        """Record one request's hop durations (the HTTP front calls this after its first client write)."""
        for hop, seconds in timer.durations_s():
            self._hop_children[hop].observe(seconds)  # children looked up once: this runs per request
            self.hop_windows[hop].observe(seconds)

    def observe_stream_interval(self, tokens_per_chunk: int) -> None:
        self._stream_interval_child.observe(tokens_per_chunk)

    def observe_loop_lag(self, seconds: float) -> None:
        self._loop_lag_child.observe(seconds)
        self.loop_lag_window.observe(seconds)

    def hops_summary(self) -> dict[str, Any]:
        """What `GET /debug/hops` answers: recent per-hop and event-loop-lag figures in ms."""
        return {
            "hops": {hop.value: window.summary() for hop, window in self.hop_windows.items()},
            "event_loop_lag": self.loop_lag_window.summary(),
        }

    def clear_hop_windows(self) -> None:
        """What `POST /debug/hops/reset` does: the next summary covers only what comes after it (the
        Prometheus histograms are untouched)."""
        for window in (*self.hop_windows.values(), self.loop_lag_window):
            window.clear()

    def set_policy(self, requested: str, effective: str) -> None:
        self.policy_info.clear()
        self.policy_info.labels(self.pool, requested, effective).set(1)


def _counter(name: str) -> str:
    """prometheus_client appends `_total` to a counter's name itself."""
    return name.removesuffix("_total")
