"""The kopf handlers of `sloguard operator`: thin wrappers that call `sloguard.operator.reconcile`.

Adapter (kopf). Loaded by `sloguard operator` (and by `kopf run -m sloguard.operator.handlers` in tests).
Level-based, and kopf itself writes nothing to the cluster:

- watch-event handlers only (pools, SLOClasses, the operator's Deployments): no finalizer, no progress
  or diff-base annotations, so every write the operator makes carries its one field manager
  (`names.FIELD_MANAGER`), and a pool deleted after the operator is gone is not held up (uninstall);
  children go with their pool through ownerReferences and the garbage collector;
- a pool event reconciles that pool by name (re-read first) unless this operator already reconciled
  its current generation; a Deployment event refreshes its pool's status (Ready without a lag);
- an SLOClass event re-renders every pool that names it;
- two kopf indices (`sloclass_index`: every class by name; `pools_by_class`: every watched pool under
  each class it names) replace LISTs: handlers and loops read them as a plain `Catalog`, so a pool
  event LISTs nothing. kopf fills them before any handler runs and updates them before the handlers
  of the same event; a class they lack blocks its pools until the class's event or the resync;
- one resync loop re-applies every served pool every `resync_interval_s`: the safety net that repairs
  deleted or hand-edited children and retries what failed (a missing SLOClass, a 409, a 5xx);
- one autoscaling loop ticks the pools whose spec.autoscaling is enabled (`sloguard.operator.autoscale`);
- errors are logged, never raised into kopf: the next event or resync decides again.
"""

import asyncio
import contextlib
import copy
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf

from sloguard.operator.autoscale import PoolAutoscaler, autoscaling_enabled
from sloguard.operator.core.config import OperatorConfig
from sloguard.operator.core.names import ANNOTATION_PREFIX, FINALIZER, GROUP, MANAGED_BY, POOL_LABEL, VERSION
from sloguard.operator.core.paths import POOLS_ALL_NAMESPACES
from sloguard.operator.kube import ApiError, KubeApi
from sloguard.operator.reconcile import BlockedError, Catalog, PoolKey, Reconciler

LOG = logging.getLogger(__name__)
POOLS = (GROUP, VERSION, "inferencepools")
SLOCLASSES = (GROUP, VERSION, "sloclasses")
AUTOSCALE_TICK_S = 1.0
"""How often the autoscaling loop looks whether a pool's spec.autoscaling.interval has passed."""


@kopf.index(*SLOCLASSES)
def sloclass_index(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """Every SLOClass by name (its whole body, for the builders)."""
    return {name: _plain(body)}


@kopf.index(*POOLS)
def pools_by_class(body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """Every watched pool under each class its spec names (raw: a pool with a bad spec is found too)."""
    if body.get("metadata", {}).get("deletionTimestamp"):
        return {}
    names = (body.get("spec") or {}).get("sloClasses") or []
    plain = _plain(body)
    return {name: plain for name in names if isinstance(name, str)} if isinstance(names, list) else {}


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A plain copy of kopf's read-only body view, safe to keep after the event."""
    return copy.deepcopy(dict(body))


def catalog_of(classes: Mapping[str, Any], pools: Mapping[str, Any]) -> Catalog:
    """A `Catalog` of what the two indices hold now (each index value is a store of one or more bodies)."""
    return Catalog(
        classes={name: next(iter(store)) for name, store in classes.items() if store},
        pools_by_class={name: list(store) for name, store in pools.items()},
    )


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    """Every operator setting, in one place; starts the resync and autoscaling loops.

    kopf passes the indices (`sloclass_index`, `pools_by_class`) to every handler, this one included;
    they are live (kopf updates them in place), so the reconciler and the loops read the same ones."""
    sloclass_index: kopf.Index[str, dict[str, Any]] = kwargs["sloclass_index"]
    pools_by_class: kopf.Index[str, dict[str, Any]] = kwargs["pools_by_class"]
    config = OperatorConfig.from_env(os.environ)
    memo.config = config
    memo.api = KubeApi.connect(config)
    memo.reconciler = Reconciler(memo.api, config, lambda: catalog_of(sloclass_index, pools_by_class))
    memo.autoscalers = {}
    # No handler needs them any more; kept so that kopf removes the finalizer an older version added.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # Watches that never time out can hang silently behind load balancers (kopf issue 810).
    # The server-side timeout is a query parameter, which the API server accepts only as an integer.
    settings.watching.server_timeout = int(config.watch_server_timeout_s)
    settings.watching.client_timeout = config.watch_client_timeout_s
    settings.watching.connect_timeout = config.connect_timeout_s
    settings.networking.request_timeout = config.request_timeout_s
    settings.networking.connect_timeout = config.connect_timeout_s
    # Backoff of kopf's own API calls on transient errors.
    settings.networking.error_backoffs = [1, 2, 4, 8, 16]
    # One replica (Deployment strategy Recreate), so no peering objects are needed.
    settings.peering.standalone = True
    settings.posting.enabled = os.environ.get("SLOGUARD_POST_EVENTS", "true").lower() != "false"
    settings.posting.level = logging.WARNING
    memo.loops = [
        asyncio.create_task(_forever("resync", config.resync_interval_s, lambda: resync_all(memo))),
        asyncio.create_task(_forever("autoscale", AUTOSCALE_TICK_S, lambda: autoscale_all(memo))),
    ]


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    config = OperatorConfig.from_env(os.environ)
    if config.apiserver_url:
        return kopf.ConnectionInfo(server=config.apiserver_url, insecure=True)
    return kopf.login_via_client(**kwargs)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.get("loops", []):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for autoscaler in memo.get("autoscalers", {}).values():
        autoscaler.close()  # its Prometheus client
    api: KubeApi | None = memo.get("api")
    if api is not None:
        await api.close()


async def _forever(name: str, interval_s: float, step: Callable[[], Awaitable[None]]) -> None:
    """Run `step` every `interval_s` until cancelled; a failing step is logged and run again next time."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:  # a loop of the operator must outlive any one failure
            LOG.exception("%s loop: step failed; next in %.0f s", name, interval_s)


def _key(body: Mapping[str, Any]) -> PoolKey:
    md = body.get("metadata") or {}
    return PoolKey(md.get("namespace") or "default", md.get("name", ""))


@kopf.on.event(*POOLS)
async def pool_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A pool appeared, changed or went: reconcile it (by name, re-read) or forget it."""
    reconciler: Reconciler = memo.reconciler
    key = _key(body)
    if type == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
        autoscaler = memo.autoscalers.pop(key, None)
        if autoscaler is not None:
            autoscaler.close()
        await _quietly(reconciler.pool_deleted(key), f"SLOClass status after deleting {key}")
        return
    if not memo.config.serves(key.namespace):
        return
    reconciler.remember(key, dict(body))
    if reconciler.is_current(key, body.get("metadata", {}).get("generation")):
        return  # a status or metadata write (often our own) on a generation already reconciled
    await _quietly(reconciler.reconcile(key), f"pool {key}")


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
async def deployment_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A pool's Deployment changed (replicas became ready, a rollout ended): refresh the pool's status."""
    md = body.get("metadata") or {}
    pool = (md.get("labels") or {}).get(POOL_LABEL)
    namespace = md.get("namespace") or "default"
    if not pool or not memo.config.serves(namespace):
        return
    await _quietly(memo.reconciler.reconcile(PoolKey(namespace, pool)), f"status of {namespace}/{pool}")


@kopf.on.event(*SLOCLASSES)
async def sloclass_event(name: str, memo: kopf.Memo, **_: Any) -> None:
    """Any change of a class (including its deletion) re-renders every pool that names it."""
    await _quietly(memo.reconciler.sloclass_changed(name), f"SLOClass {name}")


async def _quietly(work: Awaitable[None], what: str) -> None:
    """Await `work`; a blocked pool or an API error is logged (the resync loop retries), never raised."""
    try:
        await work
    except BlockedError as blocked:
        LOG.info("%s blocked: %s", what, blocked)
    except ApiError as err:
        LOG.warning("%s: %s; the resync retries", what, err)


async def resync_all(memo: kopf.Memo) -> None:
    """Re-apply every served pool (one list, then one reconcile each): repairs drift, retries failures."""
    api: KubeApi = memo.api
    reconciler: Reconciler = memo.reconciler
    for body in await api.list(POOLS_ALL_NAMESPACES):
        key = _key(body)
        if memo.config.serves(key.namespace) and not body.get("metadata", {}).get("deletionTimestamp"):
            await _quietly(reconciler.reconcile(key), f"resync of {key}")


async def autoscale_all(memo: kopf.Memo) -> None:
    """One tick of every autoscaling pool whose spec.autoscaling.interval has passed (concurrently)."""
    api: KubeApi = memo.api
    if api.closed:
        return
    autoscalers: dict[PoolKey, PoolAutoscaler] = memo.autoscalers
    due = []
    now = time.monotonic()
    for body in memo.reconciler.known_bodies():
        if not autoscaling_enabled(body.get("spec")):
            continue
        key = _key(body)
        state = autoscalers.get(key)
        if state is None:
            state = autoscalers[key] = PoolAutoscaler(memo.config)
        if state.due(body, now):
            due.append((key, state, body))

    reconciler: Reconciler = memo.reconciler
    classes = reconciler.catalog().classes

    async def tick(key: PoolKey, state: PoolAutoscaler, body: dict[str, Any]) -> None:
        try:
            await state.tick(
                api, body, classes=classes, reconcile=functools.partial(reconciler.reconcile, key)
            )
        except ApiError as err:
            LOG.warning("autoscaling of %s failed, next tick retries: %s", key, err)

    await asyncio.gather(*(tick(*item) for item in due))
