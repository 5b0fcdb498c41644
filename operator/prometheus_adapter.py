"""Builds the autoscaler's `PoolSnapshot` from Prometheus: SLOGuard's sidecar series and vLLM's.

Called by the operator's autoscaling timer once per pool and interval (blocking HTTP; run it in a
thread from async code). Every PromQL expression the autoscaler uses is in `pool_queries` below and
documented in docs/autoscaling.md. The connection verifies TLS unless told not to and may carry a
CA bundle, a bearer token or basic auth (`core.prometheus_connection`). Nothing raises into the
caller: a failed query, a missing sidecar series or a malformed answer gives a snapshot with
`available=False` and the reason, which the decision core turns into "hold, MetricsUnavailable".
vLLM's series are optional: without them (or when they are stale) the KV, preemption and throughput
fields stay None and the snapshot says so in `notes`.
"""

import logging
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from urllib3.exceptions import InsecureRequestWarning
from urllib3.util.retry import Retry

from sloguard.api import metric_names as m
from sloguard.operator.core.autoscaling.histograms import bucket_std
from sloguard.operator.core.autoscaling.snapshot import ClassSnapshot, PoolSnapshot, ReplicaCounts
from sloguard.operator.core.prometheus_connection import PrometheusConnection

log = logging.getLogger(__name__)

LABEL_POD = "pod"
"""The pod label Prometheus adds to every scraped sidecar series (PodMonitor/ServiceMonitor target label)."""

QueryFn = Callable[[str, float], list[dict[str, Any]]]
"""(PromQL, evaluation time in Unix seconds) → the `result` list of an instant query."""


@dataclass(frozen=True, slots=True)
class AdapterSettings:
    rate_window_s: int = 60  # rate()/increase() window for arrivals, attainment, latency quantiles
    tokens_window_s: int = 600  # window for the output-length distribution (changes slowly)
    max_sample_age_s: float = 60.0  # vLLM series older than this are ignored (sidecar staleness: core)
    namespace_label: str | None = m.LABEL_NAMESPACE  # None: select on `pool` alone
    timeout_s: float = 5.0


def pod_load_query(pool: str, namespace: str | None, settings: AdapterSettings) -> str:
    """Per-pod work in the sidecars (in flight plus queued, over all classes), for drain-aware scale-down."""
    s = _selector(pool, namespace, settings)
    by_pod = f"sum by ({LABEL_POD})"
    return f"{by_pod} ({m.IN_FLIGHT}{s}) + {by_pod} ({m.QUEUE_DEPTH}{s})"


def _selector(pool: str, namespace: str | None, settings: AdapterSettings, extra: str = "") -> str:
    def quote(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"')

    parts = [f'{m.LABEL_POOL}="{quote(pool)}"']
    if settings.namespace_label and namespace is not None:
        parts.append(f'{settings.namespace_label}="{quote(namespace)}"')
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}"


def pool_queries(pool: str, namespace: str | None, settings: AdapterSettings) -> dict[str, str]:
    """Every PromQL expression the autoscaler runs for one pool, by the snapshot field it feeds."""
    s = _selector(pool, namespace, settings)
    ended = _selector(pool, namespace, settings, f'{m.LABEL_OUTCOME}!="{m.RequestOutcome.CANCELLED}"')
    w = f"{settings.rate_window_s}s"
    tw = f"{settings.tokens_window_s}s"
    by = f"sum by ({m.LABEL_SLO_CLASS})"

    def quantile(q: float, histogram: str) -> str:
        return f"histogram_quantile({q}, sum by ({m.LABEL_SLO_CLASS}, le) (rate({histogram}_bucket{s}[{w}])))"

    return {
        # freshness and pods: the per-pod cap gauge is exported by every ready sidecar
        "sidecar_newest_s": f"max(timestamp({m.IN_FLIGHT_CAP}{s}))",
        "scraped_pods": f"count({m.IN_FLIGHT_CAP}{s})",
        "in_flight_cap_total": f"sum({m.IN_FLIGHT_CAP}{s})",
        # per class
        "arrival_rate_rps": f"{by} (rate({m.REQUESTS_TOTAL}{s}[{w}]))",
        "ended": f"{by} (increase({m.REQUESTS_TOTAL}{ended}[{w}]))",
        "attained": f"{by} (increase({m.SLO_ATTAINED_TOTAL}{s}[{w}]))",
        "queue_depth": f"{by} ({m.QUEUE_DEPTH}{s})",
        "in_flight": f"{by} ({m.IN_FLIGHT}{s})",
        "queue_predicted_tokens": f"{by} ({m.QUEUE_PREDICTED_TOKENS}{s})",
        "queue_oldest_age_s": f"max by ({m.LABEL_SLO_CLASS}) ({m.QUEUE_OLDEST_AGE_SECONDS}{s})",
        "ttft_p50_s": quantile(0.5, m.TTFT_SECONDS),
        "ttft_p99_s": quantile(0.99, m.TTFT_SECONDS),
        "tpot_p50_s": quantile(0.5, m.TPOT_SECONDS),
        "tpot_p99_s": quantile(0.99, m.TPOT_SECONDS),
        "output_tokens_mean": (
            f"{by} (increase({m.OUTPUT_TOKENS}_sum{s}[{tw}]))"
            f" / {by} (increase({m.OUTPUT_TOKENS}_count{s}[{tw}]))"
        ),
        "predicted_tokens_mean": (
            f"{by} (increase({m.PREDICTED_OUTPUT_TOKENS}_sum{s}[{tw}]))"
            f" / {by} (increase({m.PREDICTED_OUTPUT_TOKENS}_count{s}[{tw}]))"
        ),
        "output_tokens_buckets": (
            f"sum by ({m.LABEL_SLO_CLASS}, le) (increase({m.OUTPUT_TOKENS}_bucket{s}[{tw}]))"
        ),
        # vLLM, pool level
        "vllm_newest_s": f"max(timestamp({m.VLLM_NUM_REQUESTS_RUNNING}{s}))",
        "kv_usage_mean": f"avg({m.VLLM_KV_CACHE_USAGE}{s})",
        "kv_usage_max": f"max({m.VLLM_KV_CACHE_USAGE}{s})",
        "preemptions_per_s": f"sum(rate({m.VLLM_NUM_PREEMPTIONS_TOTAL}{s}[{w}]))",
        "engine_waiting": f"sum({m.VLLM_NUM_REQUESTS_WAITING}{s})",
        "engine_running": f"sum({m.VLLM_NUM_REQUESTS_RUNNING}{s})",
        "generation_tokens_per_s": f"sum(rate({m.VLLM_GENERATION_TOKENS_TOTAL}{s}[{w}]))",
    }


_PER_CLASS_FIELDS = (
    "arrival_rate_rps",
    "queue_depth",
    "in_flight",
    "queue_predicted_tokens",
    "queue_oldest_age_s",
    "ttft_p50_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "tpot_p99_s",
    "output_tokens_mean",
    "predicted_tokens_mean",
)
_VLLM_FIELDS = (
    "kv_usage_mean",
    "kv_usage_max",
    "preemptions_per_s",
    "engine_waiting",
    "engine_running",
    "generation_tokens_per_s",
)


class MalformedAnswerError(ValueError):
    """Prometheus answered something that is not an instant vector of numbers."""


def _number(sample: Mapping[str, Any]) -> float | None:
    try:
        value = float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise MalformedAnswerError(f"not an instant-vector sample: {sample!r}") from err
    return value if math.isfinite(value) else None


def _scalar(result: list[dict[str, Any]]) -> float | None:
    return _number(result[0]) if result else None


def _by_class(result: list[dict[str, Any]]) -> dict[str, float | None]:
    return {str(r.get("metric", {}).get(m.LABEL_SLO_CLASS, "")): _number(r) for r in result}


class PrometheusSnapshotSource:
    """Reads pool snapshots from one Prometheus server.

    `connection` is a URL (TLS verified against the default public CAs, no credentials) or a
    `PrometheusConnection` with a CA bundle, a bearer token or basic auth.
    """

    def __init__(
        self,
        connection: str | PrometheusConnection,
        settings: AdapterSettings | None = None,
        *,
        query: QueryFn | None = None,
    ) -> None:
        if isinstance(connection, str):
            connection = PrometheusConnection(url=connection)
        self.connection = connection
        self.url = connection.url
        self.settings = settings or AdapterSettings()
        self._client: PrometheusConnect | None = None
        self._ca_file: Path | None = None
        self._query = query or self._http_query

    def _connect(self) -> PrometheusConnect:
        c = self.connection
        session = requests.Session()
        session.verify = c.verify_tls
        if not c.verify_tls:
            log.warning("TLS verification of Prometheus at %s is off (insecureSkipVerify)", c.url)
        if c.verify_tls and c.ca_pem is not None:
            fd, name = tempfile.mkstemp(prefix="sloguard-prometheus-ca-", suffix=".pem")
            with os.fdopen(fd, "w") as ca_file:
                ca_file.write(c.ca_pem)
            self._ca_file = Path(name)
            session.verify = name
        headers = {"Authorization": f"Bearer {c.bearer_token}"} if c.bearer_token else None
        return PrometheusConnect(
            url=c.url,
            headers=headers,
            auth=c.basic_auth,
            session=session,
            retry=Retry(total=1, backoff_factor=0.1, status_forcelist=[503]),
        )

    def _http_query(self, promql: str, at_s: float) -> list[dict[str, Any]]:
        if self._client is None:
            self._client = self._connect()
        with warnings.catch_warnings():
            if not self.connection.verify_tls:  # chosen in the pool's spec, logged once in _connect
                warnings.simplefilter("ignore", InsecureRequestWarning)
            result = self._client.custom_query(
                promql, params={"time": f"{at_s:.3f}"}, timeout=self.settings.timeout_s
            )
        if not isinstance(result, list):
            raise MalformedAnswerError(f"expected an instant vector, got {type(result).__name__}")
        return result

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._ca_file is not None:
            self._ca_file.unlink(missing_ok=True)
            self._ca_file = None

    def snapshot(
        self,
        *,
        pool: str,
        namespace: str | None,
        class_names: Sequence[str],
        replicas: ReplicaCounts,
        now_s: float,
    ) -> PoolSnapshot:
        """The pool as Prometheus sees it at `now_s`; never raises for Prometheus trouble."""
        try:
            return self._snapshot(pool, namespace, class_names, replicas, now_s)
        except Exception as err:  # any client, HTTP or parsing failure means "no data"
            log.warning("prometheus query for pool %s/%s failed: %s", namespace, pool, err)
            return PoolSnapshot(
                pool=pool,
                replicas=replicas,
                available=False,
                unavailable_kind="PrometheusError",
                unavailable_reason=f"Prometheus at {self.url}: {type(err).__name__}: {err}"[:1024],
            )

    def pod_loads(self, *, pool: str, namespace: str | None, now_s: float) -> dict[str, float] | None:
        """In flight plus queued per pod name at `now_s`; None when Prometheus cannot say (never raises)."""
        try:
            result = self._query(pod_load_query(pool, namespace, self.settings), now_s)
            loads = {}
            for sample in result:
                name = sample.get("metric", {}).get(LABEL_POD)
                value = _number(sample)
                if name and value is not None:
                    loads[str(name)] = value
            return loads
        except Exception as err:  # any client, HTTP or parsing failure means "unknown"
            log.warning("per-pod load query for pool %s/%s failed: %s", namespace, pool, err)
            return None

    def _snapshot(
        self,
        pool: str,
        namespace: str | None,
        class_names: Sequence[str],
        replicas: ReplicaCounts,
        now_s: float,
    ) -> PoolSnapshot:
        queries = pool_queries(pool, namespace, self.settings)

        def run(name: str) -> list[dict[str, Any]]:
            return self._query(queries[name], now_s)

        newest = _scalar(run("sidecar_newest_s"))
        if newest is None:
            return PoolSnapshot(
                pool=pool,
                replicas=replicas,
                available=False,
                unavailable_kind="MetricsMissing",
                unavailable_reason=f"no {m.IN_FLIGHT_CAP} series for pool {namespace}/{pool}",
            )
        per_class = {name: _by_class(run(name)) for name in (*_PER_CLASS_FIELDS, "ended", "attained")}
        buckets: dict[str, dict[float, float]] = {}
        for sample in run("output_tokens_buckets"):
            labels = sample.get("metric", {})
            value = _number(sample)
            if value is not None:
                le = float(labels.get("le", "+Inf"))
                buckets.setdefault(str(labels.get(m.LABEL_SLO_CLASS, "")), {})[le] = value
        classes = tuple(_class_snapshot(name, per_class, buckets.get(name, {})) for name in class_names)
        notes: list[str] = []
        vllm: dict[str, float | None] = dict.fromkeys(_VLLM_FIELDS)
        vllm_newest = _scalar(run("vllm_newest_s"))
        if vllm_newest is None:
            notes.append("no vLLM series for the pool (KV, preemptions, throughput unknown)")
        elif now_s - vllm_newest > self.settings.max_sample_age_s:
            notes.append(f"vLLM series {now_s - vllm_newest:.0f}s old: ignored")
        else:
            vllm = {name: _scalar(run(name)) for name in _VLLM_FIELDS}
        pods = _scalar(run("scraped_pods"))
        return PoolSnapshot(
            pool=pool,
            replicas=replicas,
            classes=classes,
            observed_at_s=newest,
            scraped_pods=None if pods is None else round(pods),
            in_flight_cap_total=_scalar(run("in_flight_cap_total")),
            kv_usage_mean=vllm["kv_usage_mean"],
            kv_usage_max=vllm["kv_usage_max"],
            preemptions_per_s=vllm["preemptions_per_s"],
            engine_waiting=vllm["engine_waiting"],
            engine_running=vllm["engine_running"],
            generation_tokens_per_s=vllm["generation_tokens_per_s"],
            notes=tuple(notes),
        )


def _class_snapshot(
    name: str, per_class: Mapping[str, Mapping[str, float | None]], buckets: Mapping[float, float]
) -> ClassSnapshot:
    values = {field: per_class[field].get(name) for field in _PER_CLASS_FIELDS}
    ended = per_class["ended"].get(name)
    attained = per_class["attained"].get(name) or 0.0
    attainment = min(1.0, attained / ended) if ended else None
    return ClassSnapshot(name=name, attainment=attainment, output_tokens_std=bucket_std(buckets), **values)
