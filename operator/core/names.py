"""Names the operator stamps on what it owns: labels, child names, field manager, annotation prefix.

Pure constants and tiny functions; the builders (`sloguard.operator.core.children`) and the kopf settings
(`sloguard.operator.settings`) both read them, so a label or prefix is spelt in one place only.
"""

GROUP = "sloguard.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

FIELD_MANAGER = "sloguard-operator"
"""The one field manager of every server-side apply the operator sends."""

ANNOTATION_PREFIX = GROUP
"""kopf's progress and diff-base annotations live under this prefix (not kopf.zalando.org)."""

FINALIZER = f"{GROUP}/finalizer"

POOL_LABEL = f"{GROUP}/pool"
"""Selector label of a pool's pods; stable for the life of the pool (Deployment selectors are immutable)."""

MANAGED_BY = "sloguard-operator"

CONFIG_MOUNT_DIR = "/etc/sloguard"
"""Where the sidecar sees the ConfigMap. A directory mount (never subPath), so kubelet updates it in place."""

ENGINE_CONTAINER = "engine"
SIDECAR_CONTAINER = "sidecar"


def config_map_name(pool_name: str) -> str:
    return f"{pool_name}-sidecar"


def headless_service_name(pool_name: str) -> str:
    return f"{pool_name}-headless"


def selector_labels(pool_name: str) -> dict[str, str]:
    return {POOL_LABEL: pool_name}


def selector_string(pool_name: str) -> str:
    """The selector in `status.selector` (string form), which the /scale subresource and HPA read."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(pool_name).items()))


def common_labels(pool_name: str) -> dict[str, str]:
    """Recommended labels on every child and on the pods."""
    return {
        "app.kubernetes.io/name": "inferencepool",
        "app.kubernetes.io/instance": pool_name,
        "app.kubernetes.io/component": "inference-server",
        "app.kubernetes.io/part-of": "sloguard",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **selector_labels(pool_name),
    }
