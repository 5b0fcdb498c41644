"""Kubernetes-style status conditions shared by both custom resources.

The operator builds conditions with `set_condition`, which keeps `lastTransitionTime` unchanged when
the status of a condition does not change (the Kubernetes convention), so repeated reconciles do not
churn the status. Time is passed in as an ISO-8601 string; this module never reads the clock.
"""

from enum import StrEnum

from pydantic import Field

from sloguard.api.kube import KubeModel


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(StrEnum):
    """Every condition type SLOGuard writes; reasons are CamelCase strings chosen at the writer."""

    ACCEPTED = "Accepted"  # SLOClass: the spec passed the checks beyond the schema
    READY = "Ready"  # InferencePool: ready replicas serve traffic
    PROGRESSING = "Progressing"  # InferencePool: a rollout or scaling is under way
    DEGRADED = "Degraded"  # InferencePool: a child or reference is broken
    SLO_AT_RISK = "SLOAtRisk"  # InferencePool: observed attainment under a class's target
    SCALING_LIMITED = "ScalingLimited"  # InferencePool: desired replicas clamped by bounds or cooldown
    METRICS_UNAVAILABLE = "MetricsUnavailable"  # InferencePool: autoscaler holds for lack of data
    POD_TEMPLATE_CONFLICT = "PodTemplateConflict"  # InferencePool: podTemplate fields the operator overrode


class Condition(KubeModel):
    """One entry of `status.conditions`, as in metav1.Condition."""

    type: str = Field(min_length=1, max_length=316, description="Condition type, e.g. Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="CamelCase reason for the last transition.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    last_transition_time: str = Field(
        description="RFC 3339 time the status last changed.", json_schema_extra={"format": "date-time"}
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation the condition was computed from."
    )


def set_condition(
    conditions: list[Condition],
    *,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now_iso: str,
    observed_generation: int | None = None,
) -> list[Condition]:
    """Return a new list with `type_` set; the transition time moves only when the status changes."""
    previous = next((c for c in conditions if c.type == type_), None)
    transition = (
        previous.last_transition_time if previous is not None and previous.status == status else now_iso
    )
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=observed_generation,
    )
    return [c for c in conditions if c.type != type_] + [updated]


def find_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)
