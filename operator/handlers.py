"""The kopf handlers of `sloguard operator`: thin wrappers that call `sloguard.operator.reconcile`.

Adapter (kopf). Loaded by `sloguard operator` (and by `kopf run -m sloguard.operator.handlers` in tests).
Error policy, on purpose:

- a missing SLOClass or an invalid class set -> status condition with the reason, `TemporaryError`
  (retried; an SLOClass event also retries the pools that name it at once), never a crash loop;
- a pool spec that does not parse or a child the API server rejects (4xx other than 409/429) ->
  `PermanentError` until the spec changes;
- conflicts (409), throttling (429) and server errors (5xx) -> `TemporaryError` after `retry_delay_s`;
- drift of owned children -> repaired by the per-pool resync daemon every `resync_interval_s`;
- an autoscaling tick that fails -> logged; the next tick decides again (`sloguard.operator.autoscale`).
"""

import asyncio
import logging
import os
import time
from typing import Any

import kopf

from sloguard.operator.autoscale import PoolAutoscaler, autoscaling_enabled
from sloguard.operator.core.config import OperatorConfig
from sloguard.operator.core.names import ANNOTATION_PREFIX, FINALIZER, GROUP, VERSION
from sloguard.operator.kube import ApiError, KubeApi
from sloguard.operator.reconcile import (
    BlockedError,
    delete_children,
    pools_serving,
    reconcile_all_sloclasses,
    reconcile_pool,
    reconcile_pool_by_name,
    reconcile_sloclass,
)

LOG = logging.getLogger(__name__)
POOLS = (GROUP, VERSION, "inferencepools")
SLOCLASSES = (GROUP, VERSION, "sloclasses")
AUTOSCALE_TICK_S = 1.0
"""How often the autoscaling timer looks whether a pool's spec.autoscaling.interval has passed."""


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Every operator setting, in one place."""
    config = OperatorConfig.from_env(os.environ)
    memo.config = config
    memo.api = KubeApi.connect(config)
    # Our own finalizer and annotation prefix, not kopf.zalando.org.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # Watches that never time out can hang silently behind load balancers (kopf issue 810).
    settings.watching.server_timeout = config.watch_server_timeout_s
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


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    config = OperatorConfig.from_env(os.environ)
    if config.apiserver_url:
        return kopf.ConnectionInfo(server=config.apiserver_url, insecure=True)
    return kopf.login_via_client(**kwargs)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    api: KubeApi | None = memo.get("api")
    if api is not None:
        await api.close()


def _retry(err: ApiError, config: OperatorConfig) -> kopf.TemporaryError | kopf.PermanentError:
    if err.retryable:
        return kopf.TemporaryError(str(err), delay=config.retry_delay_s)
    return kopf.PermanentError(str(err))


@kopf.on.resume(*POOLS)
@kopf.on.create(*POOLS)
@kopf.on.update(*POOLS)
async def pool_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    config: OperatorConfig = memo.config
    try:
        await reconcile_pool(memo.api, dict(body), sidecar_image=config.sidecar_image)
    except BlockedError as blocked:
        if blocked.permanent:
            raise kopf.PermanentError(str(blocked)) from None
        raise kopf.TemporaryError(str(blocked), delay=config.missing_class_retry_s) from None
    except ApiError as err:
        raise _retry(err, config) from None
    try:
        await reconcile_all_sloclasses(memo.api)  # the pools list of old and new classes
    except ApiError as err:
        LOG.warning("SLOClass status not refreshed: %s", err)


@kopf.on.delete(*POOLS)
async def pool_deleted(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    namespace = namespace or "default"  # pools are namespaced; kopf types it as optional
    autoscaler: PoolAutoscaler | None = memo.get("autoscaler")
    if autoscaler is not None:
        autoscaler.close()  # its Prometheus client
    try:
        removed = await delete_children(memo.api, namespace, name)
        LOG.info("deleted %d children of %s/%s", removed, namespace, name)
        await reconcile_all_sloclasses(memo.api)
    except ApiError as err:
        raise _retry(err, memo.config) from None


@kopf.daemon(*POOLS, cancellation_timeout=0.1)
async def resync(
    name: str, namespace: str | None, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """Level-based safety net: re-apply the pool every interval; repairs deleted or edited children."""
    config: OperatorConfig = memo.config
    namespace = namespace or "default"
    api: KubeApi = memo.api
    while not stopped:
        # A plain sleep: kopf cancels the daemon on stop (cancellation_timeout). Reconciles are
        # idempotent, so a cancelled one is simply done again by the next operator.
        await asyncio.sleep(config.resync_interval_s)
        if api.closed:  # the operator is stopping (cleanup ran before the daemons were stopped)
            break
        try:
            await reconcile_pool_by_name(api, namespace, name, sidecar_image=config.sidecar_image)
        except BlockedError as blocked:
            LOG.info("pool %s/%s still blocked: %s", namespace, name, blocked)
        except ApiError as err:
            LOG.warning(
                "resync of %s/%s failed, next try in %.0f s: %s",
                namespace,
                name,
                config.resync_interval_s,
                err,
            )


@kopf.on.event(*SLOCLASSES)
async def sloclass_event(name: str, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Any change of a class (including its deletion) re-renders every pool that names it."""
    api: KubeApi = memo.api
    try:
        if type != "DELETED":
            await reconcile_sloclass(api, name)
        config: OperatorConfig = memo.config
        for pool in await pools_serving(api, name):
            md = pool["metadata"]
            if not config.serves(md["namespace"]):
                continue  # another operator (or none) serves that namespace
            try:
                await reconcile_pool_by_name(
                    api, md["namespace"], md["name"], sidecar_image=config.sidecar_image
                )
            except BlockedError as blocked:
                LOG.info("pool %s/%s blocked: %s", md["namespace"], md["name"], blocked)
    except ApiError as err:
        # Event handlers are not retried by kopf; the resync daemon of each pool catches up.
        LOG.warning("SLOClass %s: fan-out failed, resync will retry: %s", name, err)


@kopf.timer(*POOLS, interval=AUTOSCALE_TICK_S, when=lambda spec, **_: autoscaling_enabled(spec))
async def autoscale(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Autoscaling of one pool, every spec.autoscaling.interval (ticks are cheap when not due).

    kopf gives each pool its own memo, so its `PoolAutoscaler` (decision history) lives there. Errors
    are logged, not raised: the next tick simply decides again.
    """
    api: KubeApi = memo.api
    if api.closed:
        return
    state: PoolAutoscaler | None = memo.get("autoscaler")
    if state is None:
        state = memo.autoscaler = PoolAutoscaler(memo.config)
    raw = dict(body)
    if not state.due(raw, time.monotonic()):
        return
    md = raw.get("metadata", {})
    try:
        await state.tick(api, raw)
    except ApiError as err:
        where = f"{md.get('namespace')}/{md.get('name')}"
        LOG.warning("autoscaling of %s failed, next tick retries: %s", where, err)
