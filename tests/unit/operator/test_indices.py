"""The operator's kopf indices and the `Catalog` read from them: what they hold, and that a reconcile
LISTs nothing, blocks a pool whose class the index lacks (it may lag) and recovers when the class comes.

The reconciler runs against a small in-memory fake of `KubeApi` whose `list` fails the test.
"""

from collections.abc import Callable
from typing import Any, cast

import pytest

from sloguard.operator.core.config import OperatorConfig
from sloguard.operator.handlers import catalog_of, pools_by_class, sloclass_index
from sloguard.operator.kube import ApiError
from sloguard.operator.reconcile import BlockedError, Catalog, PoolKey, Reconciler, catalog_by_class

IndexFn = Callable[..., dict[str, dict[str, Any]]]
index_pool = cast(IndexFn, pools_by_class)  # kopf's decorator types them as its callback protocol
index_class = cast(IndexFn, sloclass_index)


def pool_body(
    name: str, classes: Any, *, namespace: str = "serving", deleting: bool = False
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "apiVersion": "sloguard.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": metadata,
        "spec": {"model": "m", "engine": {"image": "vllm/vllm-openai:v0.11.0"}, "sloClasses": classes},
    }


def class_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "sloguard.dev/v1alpha1",
        "kind": "SLOClass",
        "metadata": {"name": name},
        "spec": {"ttft": "500ms", "tpot": "50ms"},
    }


@pytest.mark.parametrize(
    ("classes", "deleting", "keys"),
    [
        (["a", "b"], False, ["a", "b"]),
        (["a"], True, []),  # a pool being deleted serves nothing
        (["a", 7, {"x": 1}], False, ["a"]),  # a bad spec (CEL off) still indexes its string names
        ("a", False, []),  # not a list at all
        (None, False, []),
        ([], False, []),
    ],
)
def test_pools_by_class_indexes_a_pool_under_each_class_it_names(
    classes: Any, deleting: bool, keys: list[str]
) -> None:
    body = pool_body("p", classes, deleting=deleting)
    indexed = index_pool(body=body)
    assert sorted(indexed) == keys
    for value in indexed.values():
        assert value == body and value is not body  # a copy, not kopf's view


def test_sloclass_index_keeps_a_copy_of_the_class_by_name() -> None:
    body = class_body("gold")
    indexed = index_class(name="gold", body=body)
    assert indexed == {"gold": body}
    body["spec"]["ttft"] = "1s"
    assert indexed["gold"]["spec"]["ttft"] == "500ms"


def test_catalog_of_reads_every_store_and_pools_naming_sorts_and_drops_deleting_pools() -> None:
    b, a, gone = pool_body("b", ["c"]), pool_body("a", ["c"]), pool_body("z", ["c"], deleting=True)
    catalog = catalog_of({"c": [class_body("c")], "empty": []}, {"c": [b, gone, a]})
    assert list(catalog.classes) == ["c"]
    assert [p["metadata"]["name"] for p in catalog.pools_naming("c")] == ["a", "b"]
    assert catalog.pools_naming("unknown") == []


class FakeApi:
    """GET/apply/status-patch over a dict of objects by path; LIST fails the test."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.objects = objects
        self.status_patches: list[tuple[str, dict[str, Any]]] = []
        self.applied: list[str] = []

    async def get(self, path: str) -> dict[str, Any] | None:
        return self.objects.get(path)

    async def list(self, path: str, **_: Any) -> list[dict[str, Any]]:
        raise AssertionError(f"LIST {path}: the reconciler must read the catalog")

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.applied.append(f"{manifest['kind']}/{manifest['metadata']['name']}")
        return manifest

    async def patch_status(self, path: str, status: dict[str, Any]) -> None:
        self.status_patches.append((path, status))
        self.objects[path] = {**self.objects.get(path, {}), "status": status}


POOL_PATH = "/apis/sloguard.dev/v1alpha1/namespaces/serving/inferencepools/p"
CLASS_PATH = "/apis/sloguard.dev/v1alpha1/sloclasses/gold"


def degraded(api: FakeApi) -> dict[str, Any]:
    conditions = api.objects[POOL_PATH]["status"]["conditions"]
    return next(c for c in conditions if c["type"] == "Degraded")


async def test_a_class_the_index_lacks_blocks_the_pool_until_the_class_event() -> None:
    pool = pool_body("p", ["gold"])
    api = FakeApi({POOL_PATH: pool})
    catalog = Catalog(classes={}, pools_by_class={"gold": [pool]})  # the class's event not seen yet
    reconciler = Reconciler(api, OperatorConfig(), lambda: catalog)  # type: ignore[arg-type]

    with pytest.raises(BlockedError) as blocked:
        await reconciler.reconcile(PoolKey("serving", "p"))
    assert blocked.value.problem.reason == "SLOClassNotFound"
    assert degraded(api)["status"] == "True" and "gold" in degraded(api)["message"]
    assert api.applied == []

    # The class arrives: kopf indexes it before its event's handler, which re-renders the pool.
    api.objects[CLASS_PATH] = class_body("gold")
    catalog = Catalog(classes={"gold": class_body("gold")}, pools_by_class={"gold": [pool]})
    await reconciler.sloclass_changed("gold")
    assert "Deployment/p" in api.applied
    assert degraded(api)["status"] == "False"
    assert api.objects[CLASS_PATH]["status"]["pools"] == ["serving/p"]


async def test_pool_deleted_refreshes_the_classes_it_named_without_listing() -> None:
    pool = pool_body("p", ["gold"])
    api = FakeApi({POOL_PATH: pool, CLASS_PATH: class_body("gold")})
    catalog = Catalog(classes={"gold": class_body("gold")}, pools_by_class={"gold": [pool]})
    reconciler = Reconciler(api, OperatorConfig(), lambda: catalog)  # type: ignore[arg-type]
    await reconciler.reconcile(PoolKey("serving", "p"))
    assert api.objects[CLASS_PATH]["status"]["pools"] == ["serving/p"]

    del api.objects[POOL_PATH]
    catalog = Catalog(classes={"gold": class_body("gold")}, pools_by_class={})  # kopf dropped it
    await reconciler.pool_deleted(PoolKey("serving", "p"))
    assert api.objects[CLASS_PATH]["status"]["pools"] == []
    assert reconciler.known_bodies() == []


def test_catalog_by_class_groups_listed_pools_as_the_index_does() -> None:
    bodies = [pool_body("a", ["x", "y"]), pool_body("b", ["x", 3]), pool_body("c", "x"), pool_body("d", None)]
    catalog = catalog_by_class({}, bodies)
    names = {cls: [p["metadata"]["name"] for p in pools] for cls, pools in catalog.pools_by_class.items()}
    assert names == {"x": ["a", "b"], "y": ["a"]}
    for body in bodies:  # the same keys as the kopf index gives each pool
        assert sorted(index_pool(body=body)) == sorted(
            c for c, ps in names.items() if body["metadata"]["name"] in ps
        )


class ListingApi(FakeApi):
    """A FakeApi whose LIST of pools answers with `pools` (and counts the calls)."""

    def __init__(self, objects: dict[str, dict[str, Any]], pools: list[dict[str, Any]]) -> None:
        super().__init__(objects)
        self.pools = pools
        self.lists = 0

    async def list(self, path: str, **_: Any) -> list[dict[str, Any]]:
        assert "inferencepools" in path, path
        self.lists += 1
        return self.pools


async def test_serving_some_namespaces_the_class_status_still_lists_pools_of_every_namespace() -> None:
    pool, elsewhere = pool_body("p", ["gold"]), pool_body("q", ["gold"], namespace="other")
    api = ListingApi({POOL_PATH: pool, CLASS_PATH: class_body("gold")}, [pool, elsewhere])
    catalog = Catalog(classes={"gold": class_body("gold")}, pools_by_class={"gold": [pool]})  # watched only
    reconciler = Reconciler(api, OperatorConfig(namespaces="serving"), lambda: catalog)  # type: ignore[arg-type]
    await reconciler.reconcile(PoolKey("serving", "p"))
    assert api.objects[CLASS_PATH]["status"]["pools"] == ["other/q", "serving/p"]
    lists = api.lists
    await reconciler.reconcile(PoolKey("serving", "p"))  # same class set: no class refresh, no LIST
    assert api.lists == lists


class TerminatingNamespaceApi(FakeApi):
    """A FakeApi whose namespace is being deleted: every apply gets the API server's 403 for that."""

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        name = manifest["metadata"]["name"]
        raise ApiError(
            403,
            f'{manifest["kind"].lower()}s "{name}" is forbidden: unable to create new content in namespace'
            " serving because it is being terminated",
            method="PATCH",
            path=f"/x/{name}",
        )


async def test_a_pool_whose_namespace_is_being_deleted_is_let_go_quietly() -> None:
    """Not an RBAC failure, not Degraded, not retried: the pool goes with its namespace."""
    pool = pool_body("p", ["gold"])
    api = TerminatingNamespaceApi({POOL_PATH: pool, CLASS_PATH: class_body("gold")})
    catalog = Catalog(classes={"gold": class_body("gold")}, pools_by_class={"gold": [pool]})
    reconciler = Reconciler(api, OperatorConfig(), lambda: catalog)  # type: ignore[arg-type]
    await reconciler.reconcile(PoolKey("serving", "p"))  # does not raise
    assert all(path != POOL_PATH for path, _ in api.status_patches)  # no ApplyFailed written
    assert reconciler.known_bodies() == []


async def test_an_rbac_forbidden_still_fails_the_reconcile() -> None:
    class Denied(FakeApi):
        async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
            raise ApiError(403, "deployments.apps is forbidden: User cannot patch", method="PATCH", path="/x")

    pool = pool_body("p", ["gold"])
    api = Denied({POOL_PATH: pool, CLASS_PATH: class_body("gold")})
    catalog = Catalog(classes={"gold": class_body("gold")}, pools_by_class={"gold": [pool]})
    reconciler = Reconciler(api, OperatorConfig(), lambda: catalog)  # type: ignore[arg-type]
    with pytest.raises(ApiError):
        await reconciler.reconcile(PoolKey("serving", "p"))
    assert degraded(api)["reason"] == "ApplyFailed"
