"""The SLOGuard contract: custom-resource models, the sidecar configuration, metric names, error kinds.

Everything else in SLOGuard imports this package; it imports nothing of SLOGuard and no third-party
library beyond pydantic. The operator reads and writes these models, the sidecar loads its
configuration through them, and `sloguard crds` generates the CRD YAML in `crds/` from them.
"""

from sloguard.api.conditions import Condition, ConditionStatus, ConditionType
from sloguard.api.duration import Duration, format_duration_s, parse_duration_s
from sloguard.api.errors import RejectionReason
from sloguard.api.inferencepool import (
    InferencePool,
    InferencePoolSpec,
    InferencePoolStatus,
    PoolRole,
)
from sloguard.api.policies import SchedulingPolicyName
from sloguard.api.sidecar_config import SidecarConfig, SLOClassConfig, sidecar_config_for_pool
from sloguard.api.sloclass import OnUnattainable, SLOClass, SLOClassSpec, SLOClassStatus

GROUP = "sloguard.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "Duration",
    "InferencePool",
    "InferencePoolSpec",
    "InferencePoolStatus",
    "OnUnattainable",
    "PoolRole",
    "RejectionReason",
    "SLOClass",
    "SLOClassConfig",
    "SLOClassSpec",
    "SLOClassStatus",
    "SchedulingPolicyName",
    "SidecarConfig",
    "format_duration_s",
    "parse_duration_s",
    "sidecar_config_for_pool",
]
