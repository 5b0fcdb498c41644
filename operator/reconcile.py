"""Reconcilers: bring one pool's children and status, or one SLOClass's status, to the declared state.

Adapter between the kopf handlers (`sloguard.operator.handlers`) and the pure core: reads objects
through `KubeApi`, asks `core.plan` / `core.status` / `core.sloclass_checks` what they should be, and
writes only owned children and `status`. Never the user's spec. Raises `BlockedError` for a problem the user
must fix (a missing SLOClass) and lets `ApiError` through for the handler to turn into a retry.
"""

import asyncio
import datetime
import logging
from dataclasses import dataclass
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
    api: KubeApi, body: dict[str, Any], *, sidecar_image: str = DEFAULT_SIDECAR_IMAGE
) -> dict[str, Any]:
    """Apply every child of the pool in `body` and write its status; returns the status written.

    `sidecar_image` is the operator's sidecar image, for pools that do not pin one."""
    md = body["metadata"]
    try:
        pool = parse_pool(body)
    except ValueError as err:
        status = _invalid_spec_status(body, str(err))
        await _write_status(api, body, status)
        raise BlockedError(Problem("InvalidSpec", str(err)), permanent=True) from None
    classes = {c["metadata"]["name"]: c for c in await api.list(SLOCLASSES)}
    plan = plan_pool(pool, classes, sidecar_image=sidecar_image)
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


def _parsed_pools(bodies: list[dict[str, Any]]) -> list[InferencePool]:
    pools = []
    for body in bodies:
        if body.get("metadata", {}).get("deletionTimestamp"):
            continue
        try:
            pools.append(parse_pool(body))
        except ValueError:
            continue
    return pools


def _parsed_classes(bodies: list[dict[str, Any]]) -> list[SLOClass]:
    classes = []
    for body in bodies:
        try:
            classes.append(SLOClass.model_validate(body))
        except ValueError:
            continue
    return classes


async def reconcile_sloclass(api: KubeApi, name: str) -> dict[str, Any] | None:
    """Write the Accepted condition and the serving pools of one class; None when it is gone."""
    body = await api.get(sloclass_path(name))
    if body is None:
        return None
    pools = _parsed_pools(await api.list(POOLS_ALL_NAMESPACES))
    classes = _parsed_classes(await api.list(SLOCLASSES))
    status = sloclass_status(body, pools=pools, classes=classes, now_iso=now_iso())
    if not declared_in(status, body.get("status") or {}):
        await api.patch_status(sloclass_path(name), status)
    return status


async def reconcile_all_sloclasses(api: KubeApi) -> None:
    for body in await api.list(SLOCLASSES):
        await reconcile_sloclass(api, body["metadata"]["name"])


async def pools_serving(api: KubeApi, class_name: str) -> list[dict[str, Any]]:
    """Pool objects whose spec names the class (read raw, so a pool with a bad spec is still found)."""
    return [
        body
        for body in await api.list(POOLS_ALL_NAMESPACES)
        if class_name in ((body.get("spec") or {}).get("sloClasses") or [])
        and not body.get("metadata", {}).get("deletionTimestamp")
    ]


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

    def __init__(self, api: KubeApi, config: OperatorConfig) -> None:
        self._api = api
        self._config = config
        self._locks: dict[PoolKey, asyncio.Lock] = {}
        self._reconciled_generation: dict[PoolKey, Any] = {}
        self._bodies: dict[PoolKey, dict[str, Any]] = {}

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
            try:
                await reconcile_pool(self._api, body, sidecar_image=self._config.sidecar_image)
            except BlockedError:
                self._reconciled_generation[key] = generation  # the resync and class events retry it
                raise
            finally:
                if first or _classes_of(before) != _classes_of(body):
                    await reconcile_all_sloclasses(self._api)
            self._reconciled_generation[key] = generation

    async def sloclass_changed(self, name: str) -> None:
        """Write the class's status and re-render every served pool that names it."""
        await reconcile_sloclass(self._api, name)
        for pool in await pools_serving(self._api, name):
            md = pool["metadata"]
            if self._config.serves(md["namespace"]):
                try:
                    await self.reconcile(PoolKey(md["namespace"], md["name"]))
                except BlockedError as blocked:
                    LOG.info("pool %s/%s blocked: %s", md["namespace"], md["name"], blocked)

    async def refresh_sloclasses(self) -> None:
        await reconcile_all_sloclasses(self._api)


def _classes_of(body: dict[str, Any] | None) -> list[str] | None:
    if body is None:
        return None
    return list((body.get("spec") or {}).get("sloClasses") or [])


__all__ = [
    "BlockedError",
    "PoolKey",
    "Reconciler",
    "child_paths",
    "delete_children",
    "pools_serving",
    "reconcile_all_sloclasses",
    "reconcile_pool",
    "reconcile_pool_by_name",
    "reconcile_sloclass",
]
