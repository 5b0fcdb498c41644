"""The real operator (kopf.testing.KopfRunner) against kmock's Kubernetes emulator.

Each test starts the operator in its own thread, drives the API like a user or a controller would, and
waits for conditions with a deadline (never a bare sleep). kmock has no controllers and no garbage
collector, so tests write Deployment status themselves and check deletion done by the operator.
"""

import asyncio
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
    with kopf.testing.KopfRunner(args, timeout=20) as runner:
        yield kmock
        # kopf's last PATCHes go to kmock, whose loop __exit__ blocks: let them land first.
        await asyncio.sleep(0.3)
    assert runner.exit_code == 0, runner.output


async def test_pool_gets_children_with_owner_references_and_status(operator: Any) -> None:
    k = operator
    await k.post(CLASSES_URL, json=sloclass("interactive"))
    await k.post(POOLS_URL, json=pool(replicas=2))
    for res, name in ((CONFIGMAPS, "p1-sidecar"), (DEPLOYMENTS, "p1"), (SERVICES, "p1"), (PDBS, "p1")):
        child = await until(lambda res=res, name=name: live(k, res, NS, name), f"{res} {name}")
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
