"""`sloguard operator` as users run it, against a real kube-apiserver with RBAC and a controller-manager.

Every check waits for a condition with a bound (`eventually`), never for a fixed time. The operator runs
as the Helm chart's ServiceAccount, so each test also proves the chart's RBAC is enough: `_clean_audit`
finds no Forbidden answer to the operator, no write to a pool's spec and no write under another field
manager in the API server's audit log.
"""

import functools
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sloguard_testing.kube_cluster import ControlPlane, KubeRequestError
from sloguard_testing.kube_operator import (
    Identity,
    OperatorProcess,
    event_time_s,
    eventually,
    operator_writes,
)

pytestmark = [pytest.mark.kube, pytest.mark.timeout(240)]

API = "/apis/sloguard.dev/v1alpha1"
FIELD_MANAGER = "sloguard-operator"
CONVERGE_S = 60.0
"""Bound on any one convergence (they take about a second; a loaded 2-core machine can stall)."""


def _class_name() -> str:
    return f"c-{uuid.uuid4().hex[:8]}"  # SLOClasses are cluster-scoped: unique per test


def make_class(kube: ControlPlane, name: str, ttft: str = "500ms") -> None:
    kube.request(
        "POST",
        f"{API}/sloclasses",
        {
            "apiVersion": "sloguard.dev/v1alpha1",
            "kind": "SLOClass",
            "metadata": {"name": name},
            "spec": {"ttft": ttft, "tpot": "50ms"},
        },
    )


def make_pool(
    kube: ControlPlane, namespace: str, name: str, classes: list[str], **spec: Any
) -> dict[str, Any]:
    body = {
        "apiVersion": "sloguard.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": "m",
            "engine": {"image": "vllm/vllm-openai:v0.11.0"},
            "sloClasses": classes,
            **spec,
        },
    }
    created = kube.request("POST", f"{API}/namespaces/{namespace}/inferencepools", body)
    assert created is not None
    return created


def pool_path(namespace: str, name: str) -> str:
    return f"{API}/namespaces/{namespace}/inferencepools/{name}"


def child_paths(namespace: str, name: str) -> dict[str, str]:
    return {
        "ConfigMap": f"/api/v1/namespaces/{namespace}/configmaps/{name}-sidecar",
        "Deployment": f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
        "Service": f"/api/v1/namespaces/{namespace}/services/{name}",
        "PodDisruptionBudget": f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{name}",
    }


def children(kube: ControlPlane, namespace: str, name: str) -> dict[str, dict[str, Any]] | None:
    """Every child of the pool, or None while any is missing."""
    found = {kind: kube.get(path) for kind, path in child_paths(namespace, name).items()}
    if any(v is None for v in found.values()):
        return None
    return {k: v for k, v in found.items() if v is not None}


def engine(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "engine")


def condition(kube: ControlPlane, namespace: str, name: str, type_: str) -> dict[str, Any] | None:
    pool = kube.get(pool_path(namespace, name)) or {}
    for cond in (pool.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def sidecar_config(kube: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    cm = kube.get(child_paths(namespace, name)["ConfigMap"]) or {"data": {"sidecar.json": "{}"}}
    parsed: dict[str, Any] = json.loads(next(iter(cm["data"].values())))
    return parsed


def _code(event: dict[str, Any]) -> int:
    return int(event.get("responseStatus", {}).get("code") or 0)


def _namespace_terminating(event: dict[str, Any]) -> bool:
    return "being terminated" in str(event.get("responseStatus", {}).get("message") or "")


def _clean_audit(
    kube: ControlPlane, identity: Identity, operator: OperatorProcess, *, restarted_at: int | None = None
) -> None:
    """No Forbidden, never a pool spec write, every write under the operator's one field manager.

    Only this operator's requests count (the identity is shared by every test's operator, so events
    before it started are another test's). A 403 for a namespace being deleted is the API server
    refusing new objects there, not RBAC: an operator serving all namespaces meets a previous test's
    namespace while it terminates. `restarted_at` (an index into the audit log) marks an API-server
    restart: a freshly started server answers 403 until its RBAC authorizer has read the roles, so a
    Forbidden logged after it counts only when the same request never succeeded later (the operator
    must retry, not give up)."""
    assert operator.alive, operator.log_tail()
    events = kube.audit_events()
    mine = [
        (i, e)
        for i, e in enumerate(events)
        if e.get("user", {}).get("username") == identity.username and event_time_s(e) >= operator.started_s
    ]

    def retried_ok(index: int, event: dict[str, Any]) -> bool:
        path = event["requestURI"].split("?")[0]
        return any(
            j > index
            and e["requestURI"].split("?")[0] == path
            and e.get("verb") == event.get("verb")
            and 200 <= _code(e) < 300
            for j, e in mine
        )

    forbidden = [
        e["requestURI"]
        for i, e in mine
        if _code(e) == 403
        and not _namespace_terminating(e)
        and not (restarted_at is not None and i >= restarted_at and retried_ok(i, e))
    ]
    assert not forbidden, f"Forbidden under the chart's RBAC: {forbidden[:5]}"
    writes = operator_writes(kube, identity.username, since_s=operator.started_s)
    assert writes, "the operator wrote nothing"
    other_manager = [
        e["requestURI"] for e in writes if f"fieldManager={FIELD_MANAGER}" not in e["requestURI"]
    ]
    assert not other_manager, f"writes without fieldManager={FIELD_MANAGER}: {other_manager[:5]}"
    spec_writes = [
        e["requestURI"]
        for e in writes
        if e.get("objectRef", {}).get("resource") == "inferencepools"
        and e.get("objectRef", {}).get("subresource") not in {"status", "scale"}
    ]
    assert not spec_writes, f"the operator wrote a pool itself: {spec_writes[:5]}"


def test_pool_children_updates_scale_drift_and_garbage_collection(
    kube: ControlPlane,
    namespace: str,
    operator_identity: Identity,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    operator = start_operator()
    cls = _class_name()
    make_class(kube, cls)
    pool = make_pool(
        kube,
        namespace,
        "llama",
        [cls],
        engine={
            "image": "vllm/vllm-openai:v0.11.0",
            "args": ["--enable-prefix-caching"],
            "env": [{"name": "VLLM_LOGGING_LEVEL", "value": "INFO"}],
            "resources": {"requests": {"memory": "1024Mi"}},
        },
    )
    uid = pool["metadata"]["uid"]

    made = eventually(lambda: children(kube, namespace, "llama"), CONVERGE_S, "the four children")
    for kind, child in made.items():
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "InferencePool",
            "llama",
            uid,
            True,
        ), kind
    assert "--enable-prefix-caching" in engine(made["Deployment"])["args"]

    # A spec update reaches the Deployment; a field removed from the spec is removed from it.
    kube.request(
        "PATCH",
        pool_path(namespace, "llama"),
        {"spec": {"engine": {"args": ["--max-num-batched-tokens", "2048"], "env": None}}},
        content_type="application/merge-patch+json",
    )

    def updated() -> bool:
        dep = kube.get(child_paths(namespace, "llama")["Deployment"]) or {}
        eng = engine(dep)
        return (
            "--max-num-batched-tokens" in eng["args"]
            and "--enable-prefix-caching" not in eng["args"]
            and ("env" not in eng)
        )

    eventually(updated, CONVERGE_S, "the spec update reaches the Deployment and the removed env is pruned")

    # kubectl scale through the /scale subresource reaches the Deployment.
    kube.kubectl("scale", "sgpool/llama", "-n", namespace, "--replicas=3")
    eventually(
        lambda: (kube.get(child_paths(namespace, "llama")["Deployment"]) or {})["spec"]["replicas"] == 3,
        CONVERGE_S,
        "kubectl scale reaches the Deployment",
    )

    # A deleted child is restored; a hand-edited one is put back.
    kube.request("DELETE", child_paths(namespace, "llama")["ConfigMap"])
    eventually(
        lambda: kube.get(child_paths(namespace, "llama")["ConfigMap"]), CONVERGE_S, "ConfigMap restored"
    )
    kube.kubectl("set", "image", "deployment/llama", "engine=evil:latest", "-n", namespace)
    eventually(
        lambda: (
            engine(kube.get(child_paths(namespace, "llama")["Deployment"]) or {})["image"]
            == "vllm/vllm-openai:v0.11.0"
        ),
        CONVERGE_S,
        "hand-edited image put back",
    )
    _clean_audit(kube, operator_identity, operator)

    # Deleting the pool removes its children (ownerReferences, garbage collector); nothing blocks it.
    kube.request("DELETE", pool_path(namespace, "llama"))
    eventually(lambda: kube.get(pool_path(namespace, "llama")) is None, CONVERGE_S, "the pool is gone")
    eventually(
        lambda: all(kube.get(p) is None for p in child_paths(namespace, "llama").values()),
        CONVERGE_S,
        "the garbage collector removes the children",
    )
    assert operator.alive, operator.log_tail()


def test_sloclass_edit_reaches_every_pool_without_rolling_pods(
    kube: ControlPlane,
    namespace: str,
    operator_identity: Identity,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    operator = start_operator()
    cls = _class_name()
    make_class(kube, cls, ttft="500ms")
    for name in ("a", "b"):
        make_pool(kube, namespace, name, [cls])
    deployments = {
        name: eventually(
            functools.partial(kube.get, child_paths(namespace, name)["Deployment"]), CONVERGE_S, name
        )
        for name in ("a", "b")
    }
    before = {n: sidecar_config(kube, namespace, n) for n in ("a", "b")}

    def config_changed(name: str) -> bool:
        return sidecar_config(kube, namespace, name) != before[name]

    kube.request(
        "PATCH",
        f"{API}/sloclasses/{cls}",
        {"spec": {"ttft": "750ms"}},
        content_type="application/merge-patch+json",
    )
    for name in ("a", "b"):
        eventually(
            functools.partial(config_changed, name),
            CONVERGE_S,
            f"the class edit reaches pool {name}'s ConfigMap",
        )
        dep = kube.get(child_paths(namespace, name)["Deployment"]) or {}
        assert dep["spec"]["template"] == deployments[name]["spec"]["template"], "pods would roll"
    assert sidecar_config(kube, namespace, "a")["classes"][0]["ttft_s"] == 0.75
    _clean_audit(kube, operator_identity, operator)


def test_missing_class_is_a_condition_and_recovers(
    kube: ControlPlane,
    namespace: str,
    operator_identity: Identity,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    operator = start_operator()
    cls = _class_name()
    make_pool(kube, namespace, "waits", [cls])
    degraded = eventually(
        lambda: (c := condition(kube, namespace, "waits", "Degraded")) and c["status"] == "True" and c,
        CONVERGE_S,
        "a Degraded condition naming the missing class",
    )
    assert degraded["reason"] == "SLOClassNotFound" and cls in degraded["message"]
    assert operator.alive and kube.get(child_paths(namespace, "waits")["Deployment"]) is None
    make_class(kube, cls)
    eventually(lambda: children(kube, namespace, "waits"), CONVERGE_S, "children once the class exists")
    eventually(
        lambda: (c := condition(kube, namespace, "waits", "Degraded")) and c["status"] == "False",
        CONVERGE_S,
        "Degraded clears",
    )
    _clean_audit(kube, operator_identity, operator)


def test_an_unchanged_pool_costs_zero_writes_per_resync_and_start_up_applies_once(
    kube: ControlPlane,
    namespace: str,
    operator_identity: Identity,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    cls = _class_name()
    make_class(kube, cls)
    make_pool(
        kube,
        namespace,
        "quiet",
        [cls],
        engine={
            "image": "vllm/vllm-openai:v0.11.0",
            "env": [],
            "resources": {"requests": {"memory": "1024Mi", "cpu": "2"}},
        },
    )
    operator = start_operator(resync_interval_s=1.0)
    eventually(lambda: children(kube, namespace, "quiet"), CONVERGE_S, "children")
    eventually(
        lambda: (c := condition(kube, namespace, "quiet", "Degraded")) and c["status"] == "False",
        CONVERGE_S,
        "status written",
    )

    def applies(kind: str) -> list[dict[str, Any]]:
        return [
            e
            for e in operator_writes(kube, operator_identity.username)
            if (e.get("objectRef") or {}).get("namespace") == namespace
            and (e.get("objectRef") or {}).get("resource") == kind
        ]

    assert len(applies("deployments")) == 1, [e["requestURI"] for e in applies("deployments")]

    def settled() -> bool:
        """The controller-manager has reported on the Deployment, and the pool's status shows it."""
        dep = kube.get(child_paths(namespace, "quiet")["Deployment"]) or {}
        dep_status = dep.get("status") or {}
        pool_status = (kube.get(pool_path(namespace, "quiet")) or {}).get("status") or {}
        observed = dep_status.get("observedGeneration") == dep["metadata"]["generation"]
        return bool(observed and pool_status.get("replicas") == dep_status.get("replicas", 0))

    eventually(settled, CONVERGE_S, "the pool's status reflects the Deployment's")
    seen = len(operator_writes(kube, operator_identity.username))

    def pool_reads() -> int:
        return sum(
            1
            for e in kube.audit_events()
            if e.get("user", {}).get("username") == operator_identity.username
            and e.get("verb") == "get"
            and e.get("objectRef", {}).get("resource") == "deployments"
            and e.get("objectRef", {}).get("namespace") == namespace
        )

    reads_before = pool_reads()
    eventually(lambda: pool_reads() >= reads_before + 3, CONVERGE_S, "three resyncs of the pool")
    extra = operator_writes(kube, operator_identity.username)[seen:]
    assert not extra, f"writes during idle resyncs: {[e['requestURI'] for e in extra]}"
    _clean_audit(kube, operator_identity, operator)


def test_concurrent_writer_is_overruled_and_pools_delete_after_the_operator_is_gone(
    kube: ControlPlane,
    namespace: str,
    operator_identity: Identity,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    operator = start_operator()
    cls = _class_name()
    make_class(kube, cls)
    make_pool(kube, namespace, "shared", [cls])
    eventually(lambda: children(kube, namespace, "shared"), CONVERGE_S, "children")
    # Another field manager takes a field the operator owns: it must force, and the operator takes it back.
    intruder = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "shared", "namespace": namespace},
        "spec": {"replicas": 4},
    }
    path = child_paths(namespace, "shared")["Deployment"]
    with pytest.raises(KubeRequestError, match="409"):
        kube.request(
            "PATCH", f"{path}?fieldManager=intruder", intruder, content_type="application/apply-patch+yaml"
        )
    kube.request(
        "PATCH",
        f"{path}?fieldManager=intruder&force=true",
        intruder,
        content_type="application/apply-patch+yaml",
    )
    eventually(
        lambda: (kube.get(path) or {})["spec"]["replicas"] == 1, CONVERGE_S, "the operator takes it back"
    )
    _clean_audit(kube, operator_identity, operator)

    # Uninstall: with the operator gone, deleting a pool is not held up by a finalizer.
    assert operator.stop() == 0, operator.log_tail()
    pool = kube.get(pool_path(namespace, "shared")) or {}
    assert not pool["metadata"].get("finalizers"), pool["metadata"].get("finalizers")
    kube.request("DELETE", pool_path(namespace, "shared"))
    eventually(lambda: kube.get(pool_path(namespace, "shared")) is None, CONVERGE_S, "the pool is deleted")


def test_operator_survives_an_apiserver_restart(
    kube: ControlPlane,
    namespace: str,
    operator_identity: Identity,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    operator = start_operator()
    cls = _class_name()
    make_class(kube, cls)
    make_pool(kube, namespace, "before", [cls])
    eventually(lambda: children(kube, namespace, "before"), CONVERGE_S, "children before the restart")
    restarted_at = len(kube.audit_events())
    kube.restart_apiserver(down_s=5.0)
    assert operator.alive, operator.log_tail()
    make_pool(kube, namespace, "after", [cls])  # served only if the watch came back
    eventually(lambda: children(kube, namespace, "after"), 120.0, "children of a pool made after the restart")
    operator.healthy()
    _clean_audit(kube, operator_identity, operator, restarted_at=restarted_at)


def test_a_pool_in_a_namespace_being_deleted_is_let_go(
    kube: ControlPlane, operator_identity: Identity, tmp_path: Path
) -> None:
    """The API server refuses new objects in a namespace being deleted with a 403 that is no RBAC
    failure: the operator lets the pool go (it goes with its namespace) and serves the rest as before."""
    cls = _class_name()
    make_class(kube, cls)
    doomed, alive = kube.new_namespace(), kube.new_namespace()
    make_pool(kube, doomed, "doomed", [cls])
    operator: OperatorProcess | None = None
    try:
        with kube.controllers_paused():  # the namespace controller would empty it at once
            kube.kubectl("delete", "namespace", doomed, "--wait=false")
            eventually(
                lambda: (
                    (kube.get(f"/api/v1/namespaces/{doomed}") or {}).get("status", {}).get("phase")
                    == "Terminating"
                ),
                CONVERGE_S,
                "the namespace terminating",
            )
            operator = OperatorProcess(operator_identity, tmp_path / "operator.log", resync_interval_s=2.0)

            def refused() -> bool:
                return any(
                    f"/namespaces/{doomed}/" in e["requestURI"]
                    and _code(e) == 403
                    and _namespace_terminating(e)
                    for e in kube.audit_events()
                    if e.get("user", {}).get("username") == operator_identity.username
                )

            eventually(refused, CONVERGE_S, "the operator meeting the terminating namespace")
            make_pool(kube, alive, "alive", [cls])
            eventually(lambda: children(kube, alive, "alive"), CONVERGE_S, "a live pool's children")
            _clean_audit(kube, operator_identity, operator)
            warnings = [
                line for line in operator.log_text().splitlines() if "WARNING" in line and doomed in line
            ]
            assert not warnings, warnings
            status = (kube.get(pool_path(doomed, "doomed")) or {}).get("status") or {}
            assert "ApplyFailed" not in json.dumps(status), status
    finally:
        if operator is not None:
            operator.stop()
        kube.kubectl("delete", "namespace", alive, "--wait=false", check=False)


@pytest.mark.parametrize("scope", ["all-namespaces", "one-namespace"])
def test_pool_events_list_nothing(
    kube: ControlPlane,
    namespace: str,
    operator_identity: Identity,
    tmp_path: Path,
    scope: str,
) -> None:
    """Classes and the pools naming them come from kopf's indices: a pool's events LIST nothing.

    Counted from the audit log per event (create, spec update, delete); the resync, whose one LIST of
    pools per interval is its job, is pushed out of the window. An operator serving one namespace
    watches only it, so it LISTs the pools of every namespace when a class's status is refreshed (a
    pool's first reconcile, its deletion), never the classes and never on an update. Prints the counts
    for docs/operator.md.
    """
    operator = OperatorProcess(
        operator_identity,
        tmp_path / "operator.log",
        namespaces=[] if scope == "all-namespaces" else [namespace],
        resync_interval_s=3600.0,
    )
    try:
        counts = _count_lists_per_pool_event(kube, namespace, operator_identity, operator)
        _clean_audit(kube, operator_identity, operator)
    finally:
        operator.stop()
    classes_in_cluster = len((kube.request("GET", f"{API}/sloclasses") or {}).get("items", []))
    print(
        f"LIST requests per pool event, {scope} ({classes_in_cluster} SLOClasses in the cluster): "
        + ", ".join(f"{phase} {len(uris)}" for phase, uris in counts.items())
    )
    class_lists = [uri for uris in counts.values() for uri in uris if "/sloclasses" in uri]
    assert not class_lists, counts
    assert not counts["update"], counts
    if scope == "all-namespaces":
        assert all(not uris for uris in counts.values()), counts


def _count_lists_per_pool_event(
    kube: ControlPlane, namespace: str, identity: Identity, operator: OperatorProcess
) -> dict[str, list[str]]:
    """The operator's LIST request URIs while a pool is created, updated and deleted (each converged)."""
    operator.wait_started()
    cls = _class_name()
    make_class(kube, cls)
    eventually(
        lambda: (kube.get(f"{API}/sloclasses/{cls}") or {}).get("status"),
        CONVERGE_S,
        "the class's status (its event was handled)",
    )

    def lists_since(mark: int) -> list[str]:
        return [
            e["requestURI"]
            for e in kube.audit_events()[mark:]
            if e.get("user", {}).get("username") == identity.username and e.get("verb") == "list"
        ]

    def converged(generation: int) -> bool:
        pool = kube.get(pool_path(namespace, "counted")) or {}
        cond = condition(kube, namespace, "counted", "Degraded")
        class_status = (kube.get(f"{API}/sloclasses/{cls}") or {}).get("status") or {}
        served = f"{namespace}/counted" in class_status.get("pools", [])
        return bool(
            (pool.get("status") or {}).get("observedGeneration") == generation
            and cond
            and cond["status"] == "False"
            and served
        )

    counts: dict[str, list[str]] = {}
    mark = len(kube.audit_events())
    created = make_pool(kube, namespace, "counted", [cls])
    eventually(lambda: children(kube, namespace, "counted"), CONVERGE_S, "children")
    eventually(lambda: converged(created["metadata"]["generation"]), CONVERGE_S, "status of the new pool")
    counts["create"] = lists_since(mark)

    mark = len(kube.audit_events())
    kube.request(
        "PATCH",
        pool_path(namespace, "counted"),
        {"spec": {"engine": {"args": ["--max-num-seqs", "64"]}}},
        content_type="application/merge-patch+json",
    )
    eventually(
        lambda: (
            "--max-num-seqs"
            in engine(kube.get(child_paths(namespace, "counted")["Deployment"]) or {})["args"]
        ),
        CONVERGE_S,
        "the spec update reaches the Deployment",
    )
    eventually(lambda: converged(created["metadata"]["generation"] + 1), CONVERGE_S, "status of the update")
    counts["update"] = lists_since(mark)

    mark = len(kube.audit_events())
    kube.request("DELETE", pool_path(namespace, "counted"))
    eventually(
        lambda: not ((kube.get(f"{API}/sloclasses/{cls}") or {}).get("status") or {}).get("pools"),
        CONVERGE_S,
        "the class no longer lists the deleted pool",
    )
    counts["delete"] = lists_since(mark)
    return counts
