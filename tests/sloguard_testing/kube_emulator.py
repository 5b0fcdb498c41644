"""kmock's Kubernetes emulator plus the server-side metadata kopf and our client rely on.

kmock 0.8 stores objects but sets no uid, resourceVersion, generation or creationTimestamp, its list
answers carry no kind, and a server-side apply of a missing object is a 404; this subclass adds them
(reference/feasibility.md §2). It still emulates no
validation, no garbage collection and no controllers: tests write Deployment status themselves.
"""

import datetime
import itertools
import json
import uuid
import warnings
from typing import Any

import kmock

_resource_versions = itertools.count(1)

VERBS = {"list", "watch", "get", "patch", "create", "delete", "update"}
POOLS = kmock.resource("sloguard.dev/v1alpha1/inferencepools")
SLOCLASSES = kmock.resource("sloguard.dev/v1alpha1/sloclasses")
CONFIGMAPS = kmock.resource("v1/configmaps")
SERVICES = kmock.resource("v1/services")
DEPLOYMENTS = kmock.resource("apps/v1/deployments")
PDBS = kmock.resource("policy/v1/poddisruptionbudgets")


class ServerSideEmulator(kmock.KubernetesEmulator):
    async def _handle(self, request: Any) -> Any:
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            md = data.setdefault("metadata", {})
            if self._is_apply_of_a_new_object(request):
                # A server-side apply creates what is not there (kmock's PATCH would answer 404); its
                # field ownership and pruning are not emulated: that is the `kube` tier's job.
                key = (request.resource, request.namespace, request.name)
                created = json.loads(json.dumps(data))
                created["metadata"].update(
                    uid=str(uuid.uuid4()), generation=1, resourceVersion=str(next(_resource_versions))
                )
                async with self._lock:
                    self._objects[key] = created
                    await self._buses[request.resource].put({"type": "ADDED", "object": created})
                md["resourceVersion"] = str(next(_resource_versions))
            elif request.action == kmock.action.CREATE:
                md.setdefault("uid", str(uuid.uuid4()))
                md.setdefault(
                    "creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                )
                md["generation"] = 1
                md["resourceVersion"] = str(next(_resource_versions))
            elif request.action == kmock.action.UPDATE:
                md["resourceVersion"] = str(next(_resource_versions))
                key = (request.resource, request.namespace, request.name)
                if (
                    "spec" in data
                    and not request.subresource
                    and key in self.objects
                    and not self.objects[key].deleted
                ):
                    md["generation"] = self.objects[key].get("metadata", {}).get("generation", 0) + 1
        return await super()._handle(request)

    def _is_apply_of_a_new_object(self, request: Any) -> bool:
        if request.action != kmock.action.UPDATE or not request.name or request.subresource:
            return False
        if "apply-patch" not in request.headers.get("Content-Type", ""):
            return False
        return live(self, request.resource, request.namespace, request.name) is None

    async def _serve_list(self, request: Any) -> Any:
        result: Any = await super()._serve_list(request)
        res = request.resource
        info: Any = self.resources.get(res)
        kind = info.kind if info is not None and info.kind else res.plural.capitalize()
        result["kind"] = f"{kind}List"
        result["apiVersion"] = f"{res.group}/{res.version}" if res.group else res.version
        return result


def declare_sloguard_resources(emulator: Any) -> None:
    """Built-in kinds (k3s discovery data) and our two custom resources with their status subresource."""
    with warnings.catch_warnings():  # kmock 0.8 reads its bundle with a deprecated importlib call
        warnings.simplefilter("ignore", DeprecationWarning)
        emulator.resources.load_bundled()
    emulator.resources[POOLS] = {
        "kind": "InferencePool",
        "namespaced": True,
        "subresources": {"status", "scale"},
        "verbs": VERBS,
    }
    emulator.resources[SLOCLASSES] = {
        "kind": "SLOClass",
        "namespaced": False,
        "subresources": {"status"},
        "verbs": VERBS,
    }


def live(emulator: Any, resource: Any, namespace: str | None, name: str) -> dict[str, Any] | None:
    """The current object, or None when absent or deleted."""
    try:
        obj = emulator.objects[resource, namespace, name]
    except KeyError:
        return None
    return None if obj.deleted else json.loads(json.dumps(obj, default=dict))
