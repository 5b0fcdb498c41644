"""REST paths of the kinds the operator reads and writes. Pure; used by `sloguard.operator.kube`."""

from typing import Any

from sloguard.operator.core.names import GROUP, VERSION

_COLLECTIONS = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "Pod"): "pods",  # read, and annotated with a deletion cost before a scale-down
    ("v1", "Event"): "events",  # created on scaling changes
    ("v1", "Secret"): "secrets",  # read only: Prometheus credentials (spec.autoscaling.prometheus)
    ("apps/v1", "Deployment"): "deployments",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    (f"{GROUP}/{VERSION}", "InferencePool"): "inferencepools",
}

POOLS_ALL_NAMESPACES = f"/apis/{GROUP}/{VERSION}/inferencepools"
SLOCLASSES = f"/apis/{GROUP}/{VERSION}/sloclasses"


def _prefix(api_version: str) -> str:
    return "/api/v1" if api_version == "v1" else f"/apis/{api_version}"


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    try:
        plural = _COLLECTIONS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"the operator does not manage {api_version} {kind}") from None
    return f"{_prefix(api_version)}/namespaces/{namespace}/{plural}"


def object_path(manifest: dict[str, Any]) -> str:
    md = manifest["metadata"]
    return f"{collection_path(manifest['apiVersion'], manifest['kind'], md['namespace'])}/{md['name']}"


def pool_path(namespace: str, name: str) -> str:
    return f"{collection_path(f'{GROUP}/{VERSION}', 'InferencePool', namespace)}/{name}"


def sloclass_path(name: str) -> str:
    return f"{SLOCLASSES}/{name}"
