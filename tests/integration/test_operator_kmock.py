"""The real operator (kopf.testing.KopfRunner) against kmock's Kubernetes emulator.

Each test starts the operator in its own thread, drives the API like a user or a controller would, and
waits for conditions with a deadline (never a bare sleep). kmock has no controllers and no garbage
collector, so tests write Deployment status themselves and check deletion done by the operator.
"""

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
import kopf.testing
import pytest
from sloguard_testing.kube_emulator import (
    CONFIGMAPS,
    DEPLOYMENTS,
    PDBS,
    POOLS,
    SERVICES,
    SLOCLASSES,
    ServerSideEmulator,
    declare_sloguard_resources,
    live,
)

pytestmark = [pytest.mark.kmock(cls=ServerSideEmulator), pytest.mark.timeout(30)]

NS = "default"
POOLS_URL = f"/apis/sloguard.dev/v1alpha1/namespaces/{NS}/inferencepools"
CLASSES_URL = "/apis/sloguard.dev/v1alpha1/sloclasses"
MERGE = {"Content-Type": "application/merge-patch+json"}


def sloclass(name: str, ttft: str = "500ms", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sloguard.dev/v1alpha1",
        "kind": "SLOClass",
        "metadata": {"name": name},
        "spec": {"ttft": ttft, "tpot": "50ms", **spec},
    }


def pool(name: str = "p1", classes: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sloguard.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "model": "tiny-llama",
            "engine": {"image": "vllm/vllm-openai:v0.11.0", "gpus": 1},
            "sloClasses": classes or ["interactive"],
            **spec,
        },
    }


async def until(predicate: Callable[[], Any], what: str, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions", []) or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def sidecar_config(emulator: Any, name: str = "p1") -> dict[str, Any] | None:
    cm = live(emulator, CONFIGMAPS, NS, f"{name}-sidecar")
    return None if cm is None else dict(json.loads(cm["data"]["sidecar.json"]))


def first_ttft_is(emulator: Any, name: str, ttft_s: float) -> bool:
    return bool((sidecar_config(emulator, name) or {"classes": [{}]})["classes"][0].get("ttft_s") == ttft_s)


async def set_deployment_status(k: Any, name: str, *, replicas: int, ready: int) -> None:
    """Play the Deployment controller (kmock has none): report pods as the kubelet would."""
    generation = live(k, DEPLOYMENTS, NS, name)["metadata"]["generation"]  # type: ignore[index]
    status = {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": ready,
    }
    await k.patch(
        f"/apis/apps/v1/namespaces/{NS}/deployments/{name}/status", json={"status": status}, headers=MERGE
    )


@pytest.fixture
async def operator(kmock: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    declare_sloguard_resources(kmock)
    for key, value in {
        "SLOGUARD_APISERVER_URL": str(kmock.url).rstrip("/"),
        "SLOGUARD_RESYNC_INTERVAL_S": "0.3",
        "SLOGUARD_RETRY_DELAY_S": "0.2",
        "SLOGUARD_MISSING_CLASS_RETRY_S": "0.3",
        "SLOGUARD_POST_EVENTS": "false",
    }.items():
        monkeypatch.setenv(key, value)
    args = ["run", "--standalone", "-A", "-m", "sloguard.operator.handlers"]
    runner = kopf.testing.KopfRunner(args, timeout=20)
    runner.__enter__()
    try:
        yield kmock
    finally:
        # Stop kopf from another thread: joining it here would block kmock's loop (this one), and
        # kopf's last requests to kmock would hang until their timeouts.
        await asyncio.to_thread(runner.__exit__, None, None, None)
    assert runner.exit_code == 0, runner.output


async def test_pool_gets_children_with_owner_references_and_status(operator: Any) -> None:
    k = operator
    await k.post(CLASSES_URL, json=sloclass("interactive"))
    await k.post(POOLS_URL, json=pool(replicas=2))
    for res, name in ((CONFIGMAPS, "p1-sidecar"), (DEPLOYMENTS, "p1"), (SERVICES, "p1"), (PDBS, "p1")):
        child = await until(functools.partial(live, k, res, NS, name), f"{res} {name}")
        owner = child["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("InferencePool", "p1", True)
        assert owner["uid"] == live(k, POOLS, NS, "p1")["metadata"]["uid"]  # type: ignore[index]
    assert live(k, DEPLOYMENTS, NS, "p1")["spec"]["replicas"] == 2  # type: ignore[index]
    progressing = await until(lambda: condition(live(k, POOLS, NS, "p1"), "Progressing"), "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "RollingOut")
    status = live(k, POOLS, NS, "p1")["status"]  # type: ignore[index]
    assert status["selector"] == "sloguard.dev/pool=p1"
    assert status["observedGeneration"] == 1
    assert condition(live(k, POOLS, NS, "p1"), "Ready")["reason"] == "NoReplicaReady"
    # The Deployment controller's part, which kmock does not emulate: pods become ready.
    await set_deployment_status(k, "p1", replicas=2, ready=2)
    ready = await until(
        lambda: condition(live(k, POOLS, NS, "p1"), "Ready").get("status") == "True", "Ready=True"
    )
    assert ready
    pool_now = live(k, POOLS, NS, "p1")
    assert pool_now is not None
    assert pool_now["status"]["readyReplicas"] == 2
    assert condition(pool_now, "Progressing")["reason"] == "RolloutComplete"
    accepted = await until(
        lambda: condition(live(k, SLOCLASSES, None, "interactive"), "Accepted"), "Accepted"
    )
    assert accepted["status"] == "True"
    assert live(k, SLOCLASSES, None, "interactive")["status"]["pools"] == ["default/p1"]  # type: ignore[index]


async def test_spec_update_reaches_the_deployment(operator: Any) -> None:
    k = operator
    await k.post(CLASSES_URL, json=sloclass("interactive"))
    await k.post(POOLS_URL, json=pool(replicas=1))
    await until(lambda: live(k, DEPLOYMENTS, NS, "p1"), "Deployment")
    patch = {"spec": {"replicas": 3, "engine": {"image": "vllm/vllm-openai:v0.12.0", "gpus": 2}}}
    await k.patch(f"{POOLS_URL}/p1", json=patch, headers=MERGE)

    def rolled() -> bool:
        dep = live(k, DEPLOYMENTS, NS, "p1") or {}
        engine = dep["spec"]["template"]["spec"]["containers"][0]
        return bool(
            dep["spec"]["replicas"] == 3
            and engine["image"].endswith("v0.12.0")
            and engine["resources"]["limits"]["nvidia.com/gpu"] == "2"
        )

    await until(rolled, "the Deployment to follow the spec")
    args = live(k, DEPLOYMENTS, NS, "p1")["spec"]["template"]["spec"]["containers"][0]["args"]  # type: ignore[index]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    await until(
        lambda: (live(k, POOLS, NS, "p1") or {}).get("status", {}).get("observedGeneration") == 2,
        "observedGeneration 2",
    )
    assert live(k, POOLS, NS, "p1")["status"]["desiredReplicas"] == 3  # type: ignore[index]


async def test_sloclass_edit_reaches_the_config_map_without_touching_pods(operator: Any) -> None:
    k = operator
    await k.post(CLASSES_URL, json=sloclass("interactive", ttft="500ms"))
    await k.post(POOLS_URL, json=pool("p1"))
    await k.post(POOLS_URL, json=pool("p2"))
    for name in ("p1", "p2"):
        await until(functools.partial(live, k, DEPLOYMENTS, NS, name), f"Deployment of {name}")
    template_before = live(k, DEPLOYMENTS, NS, "p1")["spec"]["template"]  # type: ignore[index]
    await k.patch(f"{CLASSES_URL}/interactive", json={"spec": {"ttft": "2s"}}, headers=MERGE)
    for name in ("p1", "p2"):
        await until(
            functools.partial(first_ttft_is, k, name, 2.0),
            f"new ttft in {name}'s ConfigMap",
        )
    # Hot reload, not a restart: the pod template did not change.
    assert live(k, DEPLOYMENTS, NS, "p1")["spec"]["template"] == template_before  # type: ignore[index]


async def test_deleted_and_hand_edited_children_come_back(operator: Any) -> None:
    k = operator
    await k.post(CLASSES_URL, json=sloclass("interactive"))
    await k.post(POOLS_URL, json=pool(replicas=2))
    await until(lambda: live(k, PDBS, NS, "p1"), "all children")
    await k.delete(f"/api/v1/namespaces/{NS}/services/p1")
    await k.patch(
        f"/apis/apps/v1/namespaces/{NS}/deployments/p1", json={"spec": {"replicas": 7}}, headers=MERGE
    )
    await k.patch(
        f"/api/v1/namespaces/{NS}/configmaps/p1-sidecar", json={"data": {"sidecar.json": "{}"}}, headers=MERGE
    )
    await until(lambda: live(k, SERVICES, NS, "p1"), "the Service to come back")
    await until(lambda: (live(k, DEPLOYMENTS, NS, "p1") or {})["spec"]["replicas"] == 2, "replicas restored")
    await until(lambda: (sidecar_config(k) or {}).get("classes"), "configuration restored")


async def test_deletion_is_not_held_by_a_finalizer_and_the_class_forgets_the_pool(operator: Any) -> None:
    """No finalizer (uninstall never leaves pools Terminating); the children go with the pool through their
    ownerReferences, which kmock does not garbage-collect: tests/kube checks that on a real cluster."""
    k = operator
    await k.post(CLASSES_URL, json=sloclass("interactive"))
    await k.post(POOLS_URL, json=pool())
    await until(lambda: live(k, PDBS, NS, "p1"), "all children")
    assert not live(k, POOLS, NS, "p1")["metadata"].get("finalizers")  # type: ignore[index]
    await until(
        lambda: live(k, SLOCLASSES, None, "interactive")["status"].get("pools") == ["default/p1"],  # type: ignore[index]
        "class lists the pool",
    )
    await k.delete(f"{POOLS_URL}/p1")
    await until(lambda: live(k, POOLS, NS, "p1") is None, "the pool to be gone")
    await until(
        lambda: live(k, SLOCLASSES, None, "interactive")["status"].get("pools") == [],  # type: ignore[index]
        "class forgets the pool",
    )


async def test_missing_class_is_a_condition_then_heals(operator: Any) -> None:
    k = operator
    await k.post(POOLS_URL, json=pool(classes=["interactive", "batch"]))
    degraded = await until(lambda: condition(live(k, POOLS, NS, "p1"), "Degraded"), "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "SLOClassNotFound")
    assert "batch, interactive" in degraded["message"]
    assert condition(live(k, POOLS, NS, "p1"), "Ready")["status"] == "False"
    assert live(k, DEPLOYMENTS, NS, "p1") is None  # nothing half-built
    await k.post(CLASSES_URL, json=sloclass("interactive"))
    await k.post(CLASSES_URL, json=sloclass("batch", ttft="15s", deadline="1h"))
    await until(lambda: live(k, DEPLOYMENTS, NS, "p1"), "Deployment once the classes exist")
    await until(
        lambda: condition(live(k, POOLS, NS, "p1"), "Degraded").get("status") == "False", "Degraded=False"
    )
    assert [c["name"] for c in sidecar_config(k)["classes"]] == ["interactive", "batch"]  # type: ignore[index]


class FailFirst:
    """A kmock filter matching the first `count` `method` requests to a path containing `path_part`
    that arrive after the request numbered `after_id`.

    kmock shows a filter the same request many times (to pick each response, and again for requests it
    served earlier, even before the rule existed), and does not promise to test a rule's other criteria
    first. So the filter checks method, path and arrival itself and remembers what it matched: a request
    matched once stays matched, and only new, later matches count.
    """

    def __init__(self, count: int, method: str, path_part: str, *, after_id: int) -> None:
        self.count = count
        self.method = method.upper()
        self.path_part = path_part
        self.after_id = after_id
        self.matched: set[int] = set()

    @classmethod
    def from_now(cls, emulator: Any, count: int, method: str, path_part: str) -> "FailFirst":
        """Matching only requests that arrive from now on."""
        return cls(count, method, path_part, after_id=max((r.id for r in list(emulator)), default=-1))

    @property
    def left(self) -> int:
        return self.count - len(self.matched)

    def __call__(self, request: Any) -> bool:
        if request.id in self.matched:
            return True
        if request.id <= self.after_id or str(request.method.value) != self.method:
            return False
        if self.path_part not in str(request.url.path) or self.left <= 0:
            return False
        self.matched.add(request.id)
        return True


@pytest.mark.parametrize(
    ("verb", "status", "reason"),
    [("update", 409, "Conflict"), ("create", 500, "InternalError")],
    ids=["conflict-on-update", "server-error-on-create"],
)
async def test_injected_api_errors_are_retried_and_nothing_is_lost(
    operator: Any, verb: str, status: int, reason: str
) -> None:
    k = operator
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": status}
    await k.post(CLASSES_URL, json=sloclass("interactive"))
    if verb == "update":  # an update of an existing Deployment conflicts
        await k.post(POOLS_URL, json=pool(replicas=2))
        await until(lambda: live(k, PDBS, NS, "p1"), "every child")
        failing = FailFirst.from_now(k, 2, "patch", "/deployments")
        k["patch", kmock.resource("apps/v1/deployments"), failing] << status << body
        await k.patch(f"{POOLS_URL}/p1", json={"spec": {"replicas": 4}}, headers=MERGE)
    else:  # the creation of the Deployment (a server-side apply, hence a PATCH) fails
        failing = FailFirst.from_now(k, 2, "patch", "/deployments")
        k["patch", kmock.resource("apps/v1/deployments"), failing] << status << body
        await k.post(POOLS_URL, json=pool(replicas=4))
    # The failure is transient (retried after 0.2 s): read it from the status writes the operator sent,
    # not from a poll of live state that a stalled test loop could miss.
    degraded = await until(lambda: written_condition(k, "p1", "Degraded", "ApplyFailed"), "ApplyFailed")
    assert str(status) in degraded["message"]
    await until(
        lambda: (live(k, DEPLOYMENTS, NS, "p1") or {}).get("spec", {}).get("replicas") == 4, "replicas"
    )
    await until(lambda: live(k, PDBS, NS, "p1"), "every child after the retries")
    await until(
        lambda: condition(live(k, POOLS, NS, "p1"), "Degraded").get("status") == "False", "Degraded cleared"
    )
    # At least one request was failed (the ApplyFailed message above carries its status); a concurrent
    # reconcile may have repaired the object before a second one came.
    assert failing.left < failing.count


def written_condition(emulator: Any, pool_name: str, type_: str, reason: str) -> dict[str, Any]:
    """The first condition of `type_` with `reason` that any write to the pool's status carried."""
    for request in list(emulator):
        if str(request.method.value) not in {"PATCH", "PUT"} or f"/inferencepools/{pool_name}" not in str(
            request.url.path
        ):
            continue
        data = request.data if isinstance(request.data, dict) else {}
        cond = condition(data, type_)
        if cond.get("reason") == reason:
            return cond
    return {}


def requests_to(emulator: Any, method: str, path_part: str) -> list[Any]:
    return [r for r in list(emulator) if str(r.method.value) == method and path_part in str(r.url.path)]


async def test_resyncs_of_an_unchanged_pool_write_nothing(operator: Any) -> None:
    k = operator
    await k.post(CLASSES_URL, json=sloclass("interactive"))
    await k.post(POOLS_URL, json=pool(replicas=1))
    await until(lambda: condition(live(k, POOLS, NS, "p1"), "Progressing"), "first status")
    await until(lambda: live(k, SLOCLASSES, None, "interactive")["status"].get("pools"), "class status")  # type: ignore[index]
    settled = len(requests_to(k, "GET", f"/namespaces/{NS}/deployments/p1")) + 2
    await until(  # let the creation's concurrent reconciles (handler, daemon, class event) finish
        lambda: len(requests_to(k, "GET", f"/namespaces/{NS}/deployments/p1")) >= settled, "settling"
    )
    seen = len(list(k))
    reads_before = len(requests_to(k, "GET", f"/namespaces/{NS}/deployments/p1"))
    # Three resync rounds (each reads the Deployment) with nothing to change.
    await until(
        lambda: len(requests_to(k, "GET", f"/namespaces/{NS}/deployments/p1")) >= reads_before + 3,
        "three resyncs",
    )
    writes = [
        f"{r.method.value} {r.url.path}"
        for r in list(k)[seen:]
        if str(r.method.value) in {"POST", "PATCH", "PUT", "DELETE"}
    ]
    assert writes == [], [json.dumps(r.data)[:600] for r in list(k)[seen:] if str(r.method.value) == "PATCH"]


async def test_deleting_a_class_in_use_degrades_the_pool_but_keeps_it_serving(operator: Any) -> None:
    k = operator
    await k.post(CLASSES_URL, json=sloclass("interactive"))
    await k.post(POOLS_URL, json=pool())
    await until(lambda: live(k, PDBS, NS, "p1"), "all children")
    await k.delete(f"{CLASSES_URL}/interactive")
    degraded = await until(
        lambda: (
            condition(live(k, POOLS, NS, "p1"), "Degraded").get("reason") == "SLOClassNotFound"
            and condition(live(k, POOLS, NS, "p1"), "Degraded")
        ),
        "Degraded=SLOClassNotFound",
    )
    assert degraded["status"] == "True"
    # Running pods keep the last good configuration; nothing is torn down.
    assert (sidecar_config(k) or {}).get("classes")
    assert live(k, DEPLOYMENTS, NS, "p1") is not None


async def test_a_pool_spec_that_does_not_parse_is_reported_not_crashed_on(operator: Any) -> None:
    k = operator  # kmock validates nothing; a cluster without CEL could let this through too
    await k.post(POOLS_URL, json={**pool(), "spec": {"model": "m", "sloClasses": ["interactive"]}})
    degraded = await until(lambda: condition(live(k, POOLS, NS, "p1"), "Degraded"), "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
    assert "engine" in degraded["message"]
    assert live(k, DEPLOYMENTS, NS, "p1") is None
