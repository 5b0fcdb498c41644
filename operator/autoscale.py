"""One pool's autoscaling tick: Prometheus snapshot → decision → drain marks → /scale → status, Events.

Adapter (asyncio, KubeApi, Prometheus) between the kopf timer in `sloguard.operator.handlers` and the
pure pieces: `core.autoscaling` decides, `core.autoscaling.drain` picks the pods to remove,
`core.autoscale_status` shapes status and Events, `core.cap_bounds` carries per-pod cap bounds into the
sidecar ConfigMap. A `PoolAutoscaler` lives in the pool's kopf memo, so the decision history survives
between ticks; after an operator restart it is seeded from `status.lastScaling`.

Order of writes on a change: deletion costs on the chosen pods (scale-down only), then `spec.replicas`
through the pool's /scale subresource, then the cap bounds in `status.capBounds`, then a reconcile
(which sizes the Deployment and renders the ConfigMap), then status, then Events. Missing data never
scales (the decision core holds); it is surfaced as MetricsUnavailable.
"""

import asyncio
import datetime
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sloguard.api.conditions import ConditionType
from sloguard.api.duration import parse_duration_s
from sloguard.api.inferencepool import InferencePool
from sloguard.api.sidecar_config import SLOClassConfig
from sloguard.api.sloclass import SLOClass
from sloguard.operator.core.autoscale_status import (
    EventSpec,
    autoscaling_status,
    condition_status,
    history_from_status,
    pod_loads,
    replica_counts,
    scaling_events,
)
from sloguard.operator.core.autoscaling import (
    AutoscalerLoop,
    PoolSnapshot,
    ScalingContext,
    ScalingDecision,
    SLOGuardPolicy,
)
from sloguard.operator.core.autoscaling.drain import DELETION_COST_ANNOTATION, cost_patches, deletion_costs
from sloguard.operator.core.cap_bounds import cap_bounds_status, recorded_cap_bounds
from sloguard.operator.core.children import desired_replicas
from sloguard.operator.core.config import OperatorConfig
from sloguard.operator.core.drift import declared_in
from sloguard.operator.core.names import API_VERSION, FIELD_MANAGER, selector_labels, selector_string
from sloguard.operator.core.paths import SLOCLASSES, collection_path, pool_path
from sloguard.operator.core.plan import parse_pool
from sloguard.operator.core.prometheus_connection import CredentialsError, ObjectRef, PrometheusConnection
from sloguard.operator.core.prometheus_connection import references as prometheus_references
from sloguard.operator.core.prometheus_connection import resolve as resolve_prometheus_connection
from sloguard.operator.kube import ApiError, KubeApi
from sloguard.operator.prometheus_adapter import AdapterSettings, PrometheusSnapshotSource
from sloguard.operator.reconcile import BlockedError, reconcile_pool_by_name

LOG = logging.getLogger(__name__)
EVENT_MESSAGE_MAX_CHARS = 1024


def _now_iso(now_s: float) -> str:
    return datetime.datetime.fromtimestamp(now_s, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def autoscaling_enabled(spec: Any) -> bool:
    """The kopf `when=` filter: only pools with spec.autoscaling.enabled get ticks."""
    return bool(((spec or {}).get("autoscaling") or {}).get("enabled"))


@dataclass
class PoolAutoscaler:
    """Per-pool state kept in kopf's per-object memo."""

    config: OperatorConfig
    loop: AutoscalerLoop | None = None
    source: PrometheusSnapshotSource | None = None
    last_tick_monotonic: float | None = None
    chosen_for_removal: tuple[str, ...] = field(default=())
    metrics_status: str | None = None  # MetricsUnavailable at the last tick, for transition Events

    def due(self, body: dict[str, Any], now_monotonic: float) -> bool:
        """True when spec.autoscaling.interval has passed since the last tick (or there was none)."""
        raw = ((body.get("spec") or {}).get("autoscaling") or {}).get("interval", "15s")
        try:
            interval_s = parse_duration_s(raw)
        except ValueError:
            interval_s = 15.0
        return self.last_tick_monotonic is None or now_monotonic - self.last_tick_monotonic >= interval_s

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None

    def _source_for(self, connection: PrometheusConnection) -> PrometheusSnapshotSource:
        if self.source is None or self.source.connection != connection:  # new URL, CA or credentials
            self.close()
            settings = AdapterSettings(rate_window_s=max(1, round(self.config.autoscale_rate_window_s)))
            self.source = PrometheusSnapshotSource(connection, settings)
        return self.source

    async def tick(
        self,
        api: KubeApi,
        body: dict[str, Any],
        *,
        classes: Mapping[str, dict[str, Any]] | None = None,
        reconcile: Callable[[], Awaitable[None]] | None = None,
    ) -> ScalingDecision | None:
        """One decision for the pool in `body`; None when the pool cannot be autoscaled right now.

        The pool is read again first: kopf's copy may not show this operator's last /scale write yet.
        `classes` are the SLOClass bodies by name from the operator's index (None: LIST them);
        `reconcile` reconciles the pool after a scale or cap change (the operator passes its
        reconciler's, which holds the pool's lock; None: reconcile it directly).
        """
        self.last_tick_monotonic = time.monotonic()
        md = body.get("metadata") or {}
        fresh = await api.get(pool_path(md.get("namespace") or "default", md.get("name", "")))
        if fresh is None or (fresh.get("metadata") or {}).get("deletionTimestamp"):
            return None
        body = fresh
        try:
            pool = parse_pool(body)
        except ValueError:
            return None  # the reconciler reports InvalidSpec
        if not pool.spec.autoscaling.enabled or pool.spec.autoscaling.prometheus_base_url is None:
            return None
        classes_used = await self._classes(api, pool, classes)
        if classes_used is None:
            return None  # a missing or invalid SLOClass: the reconciler reports it
        name, namespace = pool.metadata.name, pool.metadata.namespace or "default"
        context = ScalingContext.from_spec(pool.spec, classes_used)
        if self.loop is None:
            self.loop = AutoscalerLoop(SLOGuardPolicy(), context, history_from_status(body.get("status")))
        self.loop.context = context
        deployment = await api.get(f"{collection_path('apps/v1', 'Deployment', namespace)}/{name}")
        counts = replica_counts(desired_replicas(pool), deployment)
        source: PrometheusSnapshotSource | None = None
        try:
            connection = await _prometheus_connection(api, pool)
        except CredentialsError as err:  # held like any other missing data: MetricsUnavailable says why
            now_s = time.time()
            snapshot = PoolSnapshot(
                pool=name,
                replicas=counts,
                available=False,
                unavailable_kind="PrometheusCredentials",
                unavailable_reason=f"spec.autoscaling.prometheus: {err}",
            )
        else:
            source = self._source_for(connection)
            now_s = time.time()
            snapshot = await asyncio.to_thread(
                source.snapshot,
                pool=name,
                namespace=namespace,
                class_names=[c.name for c in classes_used],
                replicas=counts,
                now_s=now_s,
            )
        history_before = self.loop.history
        try:
            decision = self.loop.step(snapshot, now_s)
        except ValueError as err:  # the wall clock went back past the last change: skip this tick
            LOG.warning("pool %s/%s: no decision: %s", namespace, name, err)
            return None
        try:
            await self._act(
                api, pool, decision, snapshot=snapshot, source=source, now_s=now_s, reconcile=reconcile
            )
        except ApiError:
            self.loop.history = history_before  # not applied: do not start a cooldown for it
            raise
        return decision

    async def _classes(
        self, api: KubeApi, pool: InferencePool, indexed: Mapping[str, dict[str, Any]] | None
    ) -> list[SLOClassConfig] | None:
        if indexed is not None:
            bodies = dict(indexed)
        else:
            bodies = {c["metadata"]["name"]: c for c in await api.list(SLOCLASSES)}
        try:
            found = [SLOClass.model_validate(bodies[n]) for n in pool.spec.slo_classes]
            return [SLOClassConfig.from_resource(c) for c in found]
        except (KeyError, ValueError):
            return None

    async def _act(
        self,
        api: KubeApi,
        pool: InferencePool,
        decision: ScalingDecision,
        *,
        snapshot: PoolSnapshot,
        source: PrometheusSnapshotSource | None,
        now_s: float,
        reconcile: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        name, namespace = pool.metadata.name, pool.metadata.namespace or "default"
        path = pool_path(namespace, name)
        if decision.desired_replicas < decision.from_replicas:
            remove = decision.from_replicas - decision.desired_replicas
            self.chosen_for_removal = await self._mark_for_removal(
                api, name, namespace, remove=remove, source=source, now_s=now_s
            )
        rerender = False
        if decision.changed:
            await api.merge_patch(f"{path}/scale", {"spec": {"replicas": decision.desired_replicas}})
            LOG.info(
                "pool %s/%s scaled %d → %d: %s",
                namespace,
                name,
                decision.from_replicas,
                decision.desired_replicas,
                decision.reason,
            )
            rerender = True
        if not decision.held_for_metrics and recorded_cap_bounds(pool) != decision.cap_bounds:
            await api.patch_status(path, cap_bounds_status(decision.cap_bounds))
            rerender = True
        if rerender:  # size the Deployment and render the ConfigMap now, not at the next resync
            try:
                if reconcile is not None:
                    await reconcile()
                else:
                    await reconcile_pool_by_name(
                        api, namespace, name, sidecar_image=self.config.sidecar_image
                    )
            except BlockedError as blocked:
                LOG.info("pool %s/%s blocked after scaling: %s", namespace, name, blocked)
        live = await api.get(path)
        if live is None:
            return
        live_status = live.get("status") or {}
        now_iso = _now_iso(now_s)
        status = autoscaling_status(
            live_status,
            decision,
            snapshot,
            generation=live.get("metadata", {}).get("generation"),
            now_iso=now_iso,
        )
        if self.metrics_status is None:  # first tick since start: the status remembers
            self.metrics_status = condition_status(live_status, ConditionType.METRICS_UNAVAILABLE)
        events = scaling_events(decision, self.metrics_status)
        metrics = decision.condition(ConditionType.METRICS_UNAVAILABLE)
        self.metrics_status = None if metrics is None else metrics.status.value
        if not declared_in(status, live_status):
            await api.patch_status(path, status)
        for event in events:
            await _post_event(api, live, event, now_iso)

    async def _mark_for_removal(
        self,
        api: KubeApi,
        name: str,
        namespace: str,
        *,
        remove: int,
        source: PrometheusSnapshotSource | None,
        now_s: float,
    ) -> tuple[str, ...]:
        """Give the least-loaded pods a negative pod-deletion-cost; returns their names (may be empty)."""
        loads = None
        if source is not None:
            loads = await asyncio.to_thread(source.pod_loads, pool=name, namespace=namespace, now_s=now_s)
        if loads is None:
            LOG.warning(
                "pool %s/%s: per-pod load unknown, the ReplicaSet picks the pods to remove", namespace, name
            )
            return ()
        pods_path = collection_path("v1", "Pod", namespace)
        bodies = await api.list(pods_path, label_selector=selector_string(name))
        costs = deletion_costs(pod_loads(bodies, loads, selector_labels(name)), remove)
        live = {
            p["metadata"]["name"]: (p["metadata"].get("annotations") or {}).get(DELETION_COST_ANNOTATION)
            for p in bodies
        }
        for pod, cost in cost_patches(costs, live).items():
            patch = {"metadata": {"annotations": {DELETION_COST_ANNOTATION: str(cost)}}}
            await api.merge_patch(f"{pods_path}/{pod}", patch)
        chosen = tuple(sorted((p for p, c in costs.items() if c < 0), key=lambda p: costs[p]))
        LOG.info("pool %s/%s: removing %s first (least in-flight work)", namespace, name, ", ".join(chosen))
        return chosen


async def _prometheus_connection(api: KubeApi, pool: InferencePool) -> PrometheusConnection:
    """The pool's Prometheus connection, with the Secrets and ConfigMaps it names read (get only)."""
    namespace = pool.metadata.namespace or "default"
    objects: dict[ObjectRef, dict[str, Any] | None] = {}
    for kind, name in prometheus_references(pool.spec.autoscaling):
        try:
            objects[(kind, name)] = await api.get(f"{collection_path('v1', kind, namespace)}/{name}")
        except ApiError as err:
            if err.status not in (401, 403):
                raise
            raise CredentialsError(f"cannot read {kind} {name}: {err.message}") from err
    return resolve_prometheus_connection(pool.spec.autoscaling, objects)


async def _post_event(api: KubeApi, pool: dict[str, Any], event: EventSpec, now_iso: str) -> None:
    """A core/v1 Event about the pool; a failure is logged, never raised (Events are best effort)."""
    md = pool["metadata"]
    namespace = md.get("namespace") or "default"
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{md['name']}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": "InferencePool",
            "name": md["name"],
            "namespace": namespace,
            "uid": md.get("uid", ""),
        },
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:EVENT_MESSAGE_MAX_CHARS],
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
        "firstTimestamp": now_iso,
        "lastTimestamp": now_iso,
        "count": 1,
    }
    try:
        await api.create(collection_path("v1", "Event", namespace), body)
    except ApiError as err:
        LOG.warning("event %s for %s/%s not posted: %s", event.reason, namespace, md["name"], err)
