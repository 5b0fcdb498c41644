"""Per-pod in-flight cap bounds chosen by the autoscaler, carried to the sidecars through the ConfigMap.

The autoscaling timer (`sloguard.operator.autoscale`) records the decision's `CapBounds` in one pool
annotation, `CAP_BOUNDS_ANNOTATION`; `core.plan` reads it back when it renders the sidecar ConfigMap, so
the bounds land in `limits.minInFlight`/`limits.maxInFlight`, which every sidecar hot-reloads (no pod
restart; the pod template does not change). The annotation is honoured only while autoscaling is
enabled, and always clamped inside the spec's `sidecar.limits`: the spec stays the outer bound. Pure.
"""

import json

from sloguard.api.inferencepool import InferencePool, SidecarLimits
from sloguard.operator.core.autoscaling.decision import CapBounds

CAP_BOUNDS_ANNOTATION = "autoscaler.sloguard.dev/cap-bounds"


def encode_cap_bounds(bounds: CapBounds) -> str:
    return json.dumps({"minInFlight": bounds.min_in_flight, "maxInFlight": bounds.max_in_flight})


def parse_cap_bounds(raw: str | None) -> CapBounds | None:
    """The bounds in an annotation value, or None when absent or not understood (then the spec rules)."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
        low, high = int(data["minInFlight"]), int(data["maxInFlight"])
    except (ValueError, TypeError, KeyError):
        return None
    if not 1 <= low <= high:
        return None
    return CapBounds(low, high)


def effective_limits(pool: InferencePool) -> SidecarLimits:
    """The sidecar limits to render: the spec's, narrowed by the autoscaler's bounds when it is enabled."""
    limits = pool.spec.sidecar.limits
    if not pool.spec.autoscaling.enabled:
        return limits
    bounds = parse_cap_bounds(pool.metadata.annotations.get(CAP_BOUNDS_ANNOTATION))
    if bounds is None:
        return limits
    low = min(max(bounds.min_in_flight, limits.min_in_flight), limits.max_in_flight)
    high = min(max(bounds.max_in_flight, low), limits.max_in_flight)
    return limits.model_copy(update={"min_in_flight": low, "max_in_flight": high})
