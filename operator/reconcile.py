"""Reconcilers: bring one pool's children and status, or one SLOClass's status, to the declared state.

Adapter between the kopf handlers (`sloguard.operator.handlers`) and the pure core: reads objects
through `KubeApi`, asks `core.plan` / `core.status` / `core.sloclass_checks` what they should be, and
writes only owned children and `status`. Never the user's spec. Raises `BlockedError` for a problem the user
must fix (a missing SLOClass) and lets `ApiError` through for the handler to turn into a retry.

Every SLOClass, and the pools naming each, come from a `Catalog`: plain data that the handlers build
from kopf's in-memory indices, so a reconcile LISTs nothing. An index may lag the API server by an
event; a class it lacks blocks the pool (SLOClassNotFound) until the class's own event or the resync
re-renders it.
"""

import asyncio
import datetime
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sloguard.api.inferencepool import InferencePool
from sloguard.api.sloclass import SLOClass
from sloguard.operator.core.children import DEFAULT_SIDECAR_IMAGE
from sloguard.operator.core.config import OperatorConfig
from sloguard.operator.core.drift import declared_in
from sloguard.operator.core.names import config_map_name, headless_service_name
from sloguard.operator.core.paths import (
    POOLS_ALL_NAMESPACES,
    SLOCLASSES,
    collection_path,
    pool_path,
    sloclass_path,
)
from sloguard.operator.core.plan import parse_pool, plan_pool
from sloguard.operator.core.sloclass_checks import sloclass_status
from sloguard.operator.core.status import Problem, pool_status
from sloguard.operator.kube import ApiError, KubeApi

LOG = logging.getLogger(__name__)


class BlockedError(Exception):
    """The pool cannot be built until the user fixes something; `problem.reason` names it."""

    def __init__(self, problem: Problem, *, permanent: bool) -> None:
        super().__init__(f"{problem.reason}: {problem.message}")
        self.problem = problem
        self.permanent = permanent


@dataclass(frozen=True)
class Catalog:
    """Every SLOClass by name, and the raw pool bodies naming each class (kopf's indices, as plain data).

    `pools_by_class` holds every watched pool that names the class, whatever its spec's validity, so a
    pool with a bad spec is still found; pools being deleted are left out by whoever builds it.
    """

    classes: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    pools_by_class: Mapping[str, Sequence[dict[str, Any]]] = field(default_factory=dict)

    def pools_naming(self, class_name: str) -> list[dict[str, Any]]:
        """Pool bodies whose spec names the class, sorted by namespace and name (a stable order)."""
        return sorted(
            (
                body
                for body in self.pools_by_class.get(class_name, ())
                if not body.get("metadata", {}).get("deletionTimestamp")
            ),
            key=lambda body: (body["metadata"].get("namespace") or "", body["metadata"].get("name", "")),
        )


def catalog_by_class(classes: Mapping[str, dict[str, Any]], pools: Iterable[dict[str, Any]]) -> Catalog:
    """A `Catalog` of `classes` and of listed pool bodies, grouped by the classes each names."""
    by_class: dict[str, list[dict[str, Any]]] = {}
    for body in pools:
        names = (body.get("spec") or {}).get("sloClasses") or []
        for name in {n for n in names if isinstance(n, str)} if isinstance(names, list) else ():
            by_class.setdefault(name, []).append(body)
    return Catalog(classes=classes, pools_by_class=by_class)


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


RECONCILER_CONDITIONS = frozenset({"Ready", "Progressing", "Degraded", "PodTemplateConflict"})
"""The pool conditions this module owns; the autoscaler owns SLOAtRisk, ScalingLimited, MetricsUnavailable."""


async def _write_status(api: KubeApi, body: dict[str, Any], status: dict[str, Any]) -> None:
    """Merge-patch `status`, with the other writers' conditions taken from the live pool, not `body`.

    `body` may predate the autoscaler's last status write (kopf hands handlers the event's copy);
    writing its conditions back would undo that write, so they are re-read just before the patch.
    """
    md = body["metadata"]
    path = pool_path(md["namespace"], md["name"])
    live = await api.get(path)
    live_status = ((live or body).get("status")) or {}
    ours = [c for c in status.get("conditions", []) if c.get("type") in RECONCILER_CONDITIONS]
    live_conditions = live_status.get("conditions", []) or []
    theirs = [c for c in live_conditions if c.get("type") not in RECONCILER_CONDITIONS]
    status = {**status, "conditions": ours + theirs}
    if declared_in(status, live_status):
        return
    await api.patch_status(path, status)


def _invalid_spec_status(body: dict[str, Any], message: str) -> dict[str, Any]:
    """Status of a pool whose spec does not parse (possible where CEL validation is off)."""
    generation = body.get("metadata", {}).get("generation")
    stamp = now_iso()
    return {
        "observedGeneration": generation,
        "conditions": [
            {
                "type": kind,
                "status": value,
                "reason": "InvalidSpec",
                "message": message,
                "lastTransitionTime": stamp,
                "observedGeneration": generation,
            }
            for kind, value in (("Ready", "False"), ("Degraded", "True"), ("Progressing", "False"))
        ],
    }


async def reconcile_pool(
    api: KubeApi,
    body: dict[str, Any],
    *,
    classes: Mapping[str, dict[str, Any]] | None = None,
    sidecar_image: str = DEFAULT_SIDECAR_IMAGE,
) -> dict[str, Any]:
    """Apply every child of the pool in `body` and write its status; returns the status written.

    `classes` are the SLOClass bodies by name (the operator's index); None LISTs them from the API
    server (callers without an index). `sidecar_image` is the operator's sidecar image, for pools that
    do not pin one."""
    md = body["metadata"]
    try:
        pool = parse_pool(body)
    except ValueError as err:
        status = _invalid_spec_status(body, str(err))
        await _write_status(api, body, status)
        raise BlockedError(Problem("InvalidSpec", str(err)), permanent=True) from None
    if classes is None:
        classes = {c["metadata"]["name"]: c for c in await api.list(SLOCLASSES)}
    plan = plan_pool(pool, dict(classes), sidecar_image=sidecar_image)
    deployment_path = f"{collection_path('apps/v1', 'Deployment', md['namespace'])}/{md['name']}"
    if plan.problem is not None:
        deployment = await api.get(deployment_path)
        status = pool_status(pool, deployment=deployment, problem=plan.problem, now_iso=now_iso())
        await _write_status(api, body, status)
        raise BlockedError(plan.problem, permanent=False)
    deployment = None
    try:
        for child in plan.children:
            live = await api.apply(child)
            if child["kind"] == "Deployment":
                deployment = live
    except ApiError as err:
        if err.namespace_terminating:  # nothing to report: the pool goes with its namespace
            raise
        problem = Problem("ApplyFailed", str(err))
        status = pool_status(pool, deployment=deployment, problem=problem, now_iso=now_iso())
        try:
            await _write_status(api, body, status)
        except ApiError as status_err:  # the retry will write it; do not hide the first error
            LOG.warning("could not record %s: %s", problem.reason, status_err)
        raise
    status = pool_status(
        pool,
        deployment=deployment,
        problem=None,
        now_iso=now_iso(),
        template_conflicts=plan.template_conflicts,
    )
    await _write_status(api, body, status)
    return status


async def reconcile_pool_by_name(
    api: KubeApi, namespace: str, name: str, *, sidecar_image: str = DEFAULT_SIDECAR_IMAGE
) -> None:
    body = await api.get(pool_path(namespace, name))
    if body is None or body.get("metadata", {}).get("deletionTimestamp"):
        return
    await reconcile_pool(api, body, sidecar_image=sidecar_image)


def child_paths(namespace: str, name: str) -> list[str]:
    """Paths of every child a pool named `name` may own (built from names only, spec not needed)."""
    return [
        f"{collection_path('policy/v1', 'PodDisruptionBudget', namespace)}/{name}",
        f"{collection_path('v1', 'Service', namespace)}/{name}",
        f"{collection_path('v1', 'Service', namespace)}/{headless_service_name(name)}",
        f"{collection_path('apps/v1', 'Deployment', namespace)}/{name}",
        f"{collection_path('v1', 'ConfigMap', namespace)}/{config_map_name(name)}",
    ]


async def delete_children(api: KubeApi, namespace: str, name: str) -> int:
    """Delete the pool's children (the garbage collector would too; this also works without one)."""
    deleted = 0
    for path in child_paths(namespace, name):
        deleted += int(await api.delete(path))
    return deleted


def _parsed_pools(bodies: Iterable[dict[str, Any]]) -> list[InferencePool]:
    pools = []
    for body in bodies:
        if body.get("metadata", {}).get("deletionTimestamp"):
            continue
        try:
            pools.append(parse_pool(body))
        except ValueError:
            continue
    return pools


def _parsed_classes(bodies: Iterable[dict[str, Any]]) -> list[SLOClass]:
    classes = []
    for body in bodies:
        try:
            classes.append(SLOClass.model_validate(body))
        except ValueError:
            continue
    return classes


async def reconcile_sloclass(api: KubeApi, name: str, catalog: Catalog) -> dict[str, Any] | None:
    """Write the Accepted condition and the serving pools of one class; None when it is gone.

    The class itself is re-read (a GET: its status must be the live one); the pools naming it and the
    other classes come from `catalog`."""
    body = await api.get(sloclass_path(name))
    if body is None:
        return None
    pools = _parsed_pools(catalog.pools_naming(name))
    classes = _parsed_classes(catalog.classes.values())
    status = sloclass_status(body, pools=pools, classes=classes, now_iso=now_iso())
    if not declared_in(status, body.get("status") or {}):
        await api.patch_status(sloclass_path(name), status)
    return status


async def reconcile_sloclasses(api: KubeApi, names: Iterable[str], catalog: Catalog) -> None:
    """`reconcile_sloclass` of each named class (sorted; a class not in the catalog is skipped)."""
    for name in sorted({n for n in names if isinstance(n, str)}):  # a bad spec may name a non-string
        if name in catalog.classes:
            await reconcile_sloclass(api, name, catalog)


@dataclass(frozen=True)
class PoolKey:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class Reconciler:
    """The operator's reconciles, one at a time per pool, with what it last saw of each pool.

    A per-pool lock makes concurrent triggers (the pool's own event, its Deployment's, an SLOClass
    fan-out, the resync) run one after the other; each re-reads the pool, so the later ones find
    nothing to change and write nothing (no burst of duplicate applies at start-up).
    """

    def __init__(self, api: KubeApi, config: OperatorConfig, catalog: Callable[[], Catalog]) -> None:
        """`catalog` returns what the operator's indices hold now; it is called once per reconcile."""
        self._api = api
        self._config = config
        self._catalog = catalog
        self._locks: dict[PoolKey, asyncio.Lock] = {}
        self._reconciled_generation: dict[PoolKey, Any] = {}
        self._bodies: dict[PoolKey, dict[str, Any]] = {}

    def catalog(self) -> Catalog:
        """The SLOClasses and pools the operator's indices hold now (no API call)."""
        return self._catalog()

    def remember(self, key: PoolKey, body: dict[str, Any]) -> None:
        self._bodies[key] = body

    def known_bodies(self) -> list[dict[str, Any]]:
        """The latest body seen of every pool this operator serves (for the autoscaling loop)."""
        return list(self._bodies.values())

    def forget(self, key: PoolKey) -> None:
        self._bodies.pop(key, None)
        self._reconciled_generation.pop(key, None)
        self._locks.pop(key, None)

    def is_current(self, key: PoolKey, generation: Any) -> bool:
        """True when this generation of the pool was already reconciled (a status-only event)."""
        return key in self._reconciled_generation and self._reconciled_generation[key] == generation

    async def reconcile(self, key: PoolKey) -> None:
        """Re-read the pool and reconcile it; refreshes SLOClass status when its class set changed."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            body = await self._api.get(pool_path(key.namespace, key.name))
            if body is None or body.get("metadata", {}).get("deletionTimestamp"):
                self.forget(key)
                return
            before = self._bodies.get(key)
            first = key not in self._reconciled_generation
            self._bodies[key] = body
            generation = body.get("metadata", {}).get("generation")
            catalog = self._catalog()
            try:
                await reconcile_pool(
                    self._api, body, classes=catalog.classes, sidecar_image=self._config.sidecar_image
                )
            except BlockedError:
                self._reconciled_generation[key] = generation  # the resync and class events retry it
                raise
            except ApiError as err:
                if not err.namespace_terminating:
                    raise
                # Its namespace is being deleted: the pool and its children go with it, nothing to retry.
                LOG.info("%s: namespace %s is being deleted; pool left to go", key, key.namespace)
                self.forget(key)
                return
            finally:
                old, new = _classes_of(before), _classes_of(body)
                if first:  # what this pool named before the operator (re)started is unknown
                    await reconcile_sloclasses(self._api, catalog.classes, await self._status_catalog())
                elif old != new:
                    changed = {*(old or []), *(new or [])}
                    await reconcile_sloclasses(self._api, changed, await self._status_catalog())
            self._reconciled_generation[key] = generation

    async def sloclass_changed(self, name: str) -> None:
        """Write the class's status and re-render every served pool that names it."""
        catalog = self._catalog()
        await reconcile_sloclass(self._api, name, await self._status_catalog())
        for pool in catalog.pools_naming(name):
            md = pool["metadata"]
            if self._config.serves(md["namespace"]):
                try:
                    await self.reconcile(PoolKey(md["namespace"], md["name"]))
                except BlockedError as blocked:
                    LOG.info("pool %s/%s blocked: %s", md["namespace"], md["name"], blocked)

    async def pool_deleted(self, key: PoolKey) -> None:
        """Forget the pool and refresh the status of the classes it named (all when it was never seen)."""
        before = _classes_of(self._bodies.get(key))
        self.forget(key)
        catalog = await self._status_catalog()
        await reconcile_sloclasses(self._api, catalog.classes if before is None else before, catalog)

    async def _status_catalog(self) -> Catalog:
        """The catalog for SLOClass status, which lists the pools of every namespace.

        kopf's pool index holds the watched namespaces only: complete when every namespace is served,
        otherwise the pools are LISTed (a class-status refresh only, not every pool event)."""
        catalog = self._catalog()
        if not self._config.namespaces.strip():
            return catalog
        return catalog_by_class(catalog.classes, await self._api.list(POOLS_ALL_NAMESPACES))


def _classes_of(body: dict[str, Any] | None) -> list[str] | None:
    if body is None:
        return None
    return list((body.get("spec") or {}).get("sloClasses") or [])


__all__ = [
    "BlockedError",
    "Catalog",
    "PoolKey",
    "Reconciler",
    "catalog_by_class",
    "child_paths",
    "delete_children",
    "reconcile_pool",
    "reconcile_pool_by_name",
    "reconcile_sloclass",
    "reconcile_sloclasses",
]
