"""Per-pod in-flight cap bounds chosen by the autoscaler, carried to the sidecars through the ConfigMap.

The autoscaling timer (`sloguard.operator.autoscale`) records the decision's `CapBounds` in the pool's
`status.capBounds` (status, not an annotation: the operator never writes the user's object outside
status and /scale); `core.plan` reads it back when it renders the sidecar ConfigMap, so the bounds land
in `limits.minInFlight`/`limits.maxInFlight`, which every sidecar hot-reloads (no pod restart; the pod
template does not change). The bounds are honoured only while autoscaling is enabled, and always
clamped inside the spec's `sidecar.limits`: the spec stays the outer bound. Pure.
"""

from typing import Any

from sloguard.api.inferencepool import InferencePool, SidecarLimits
from sloguard.operator.core.autoscaling.decision import CapBounds

CAP_BOUNDS_STATUS_FIELD = "capBounds"


def cap_bounds_status(bounds: CapBounds) -> dict[str, Any]:
    """The status patch that records `bounds`."""
    return {
        CAP_BOUNDS_STATUS_FIELD: {"minInFlight": bounds.min_in_flight, "maxInFlight": bounds.max_in_flight}
    }


def recorded_cap_bounds(pool: InferencePool) -> CapBounds | None:
    """The bounds in the pool's status, or None when absent or inverted (then the spec rules)."""
    recorded = pool.status.cap_bounds if pool.status is not None else None
    if recorded is None or recorded.min_in_flight > recorded.max_in_flight:
        return None
    return CapBounds(recorded.min_in_flight, recorded.max_in_flight)


def effective_limits(pool: InferencePool) -> SidecarLimits:
    """The sidecar limits to render: the spec's, narrowed by the autoscaler's bounds when it is enabled."""
    limits = pool.spec.sidecar.limits
    if not pool.spec.autoscaling.enabled:
        return limits
    bounds = recorded_cap_bounds(pool)
    if bounds is None:
        return limits
    low = min(max(bounds.min_in_flight, limits.min_in_flight), limits.max_in_flight)
    high = min(max(bounds.max_in_flight, low), limits.max_in_flight)
    return limits.model_copy(update={"min_in_flight": low, "max_in_flight": high})
