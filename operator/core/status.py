"""InferencePool status from what the operator observed: its Deployment, or why it could not build one.

Pure: the handlers pass the pool, the live Deployment (or None), the reconcile problem (or None) and the
time as an RFC 3339 string, and write back the fields returned here with a merge patch. Conditions set by
other writers (SLOAtRisk, ScalingLimited, MetricsUnavailable) are carried through untouched.
"""

from dataclasses import dataclass
from typing import Any

from sloguard.api.conditions import (
    Condition,
    ConditionStatus,
    ConditionType,
    find_condition,
    set_condition,
)
from sloguard.api.inferencepool import InferencePool
from sloguard.operator.core.children import desired_replicas
from sloguard.operator.core.names import selector_string


@dataclass(frozen=True)
class Problem:
    """Why the children could not be built or applied; `reason` is the CamelCase condition reason."""

    reason: str
    message: str


def _deployment_failure(deployment: dict[str, Any]) -> Problem | None:
    for cond in deployment.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return Problem("ReplicaFailure", cond.get("message", "") or cond.get("reason", ""))
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return Problem("ProgressDeadlineExceeded", cond.get("message", ""))
    return None


def _template_condition(
    pool: InferencePool, conds: list[Condition], conflicts: list[str], now_iso: str
) -> list[Condition]:
    """PodTemplateConflict: True with the overridden fields; False once a pool has (or had) a template."""
    if conflicts:
        status, reason = ConditionStatus.TRUE, "OwnedFieldsOverridden"
        message = "The operator keeps its own value of: " + "; ".join(conflicts)
    elif pool.spec.pod_template is not None or find_condition(conds, ConditionType.POD_TEMPLATE_CONFLICT):
        status, reason, message = ConditionStatus.FALSE, "Merged", "spec.podTemplate is merged into the pods."
    else:
        return conds
    return set_condition(
        conds,
        type_=ConditionType.POD_TEMPLATE_CONFLICT.value,
        status=status,
        reason=reason,
        message=message,
        now_iso=now_iso,
        observed_generation=pool.metadata.generation,
    )


def pool_status(
    pool: InferencePool,
    *,
    deployment: dict[str, Any] | None,
    problem: Problem | None,
    now_iso: str,
    template_conflicts: list[str] | None = None,
) -> dict[str, Any]:
    """The status fields the operator owns, in wire form (camelCase).

    `template_conflicts` are the `spec.podTemplate` fields the operator overrode; they are reported in
    the PodTemplateConflict condition, written once a pool has a pod template (and kept, False, after)."""
    generation = pool.metadata.generation
    previous = list(pool.status.conditions) if pool.status is not None else []
    desired = desired_replicas(pool)
    dep_status: dict[str, Any] = (deployment or {}).get("status", {}) or {}
    replicas = int(dep_status.get("replicas", 0) or 0)
    ready = int(dep_status.get("readyReplicas", 0) or 0)
    updated = int(dep_status.get("updatedReplicas", 0) or 0)
    dep_generation = (deployment or {}).get("metadata", {}).get("generation")
    dep_observed = dep_status.get("observedGeneration")

    conds = previous

    def put(type_: ConditionType, status: ConditionStatus, reason: str, message: str) -> None:
        nonlocal conds
        conds = set_condition(
            conds,
            type_=type_.value,
            status=status,
            reason=reason,
            message=message,
            now_iso=now_iso,
            observed_generation=generation,
        )

    true, false = ConditionStatus.TRUE, ConditionStatus.FALSE
    if problem is not None:
        put(ConditionType.DEGRADED, true, problem.reason, problem.message)
        put(ConditionType.PROGRESSING, false, problem.reason, "Waiting for the problem to be fixed.")
    else:
        failure = _deployment_failure(deployment) if deployment is not None else None
        if failure is not None:
            put(ConditionType.DEGRADED, true, failure.reason, failure.message)
        else:
            put(ConditionType.DEGRADED, false, "AsExpected", "All children are applied.")
        rolled_out = (
            deployment is not None
            and (dep_generation is None or (dep_observed is not None and dep_observed >= dep_generation))
            and updated >= desired
            and replicas == desired
            and ready >= desired
        )
        if rolled_out:
            put(ConditionType.PROGRESSING, false, "RolloutComplete", f"{ready}/{desired} replicas ready.")
        else:
            put(ConditionType.PROGRESSING, true, "RollingOut", f"{ready}/{desired} replicas ready.")

    if desired == 0 and problem is None:
        put(ConditionType.READY, false, "ScaledToZero", "The pool has zero replicas.")
    elif ready >= max(1, desired):
        put(ConditionType.READY, true, "AllReplicasReady", f"{ready}/{desired} replicas ready.")
    elif ready > 0:
        put(ConditionType.READY, true, "SomeReplicasReady", f"{ready}/{desired} replicas ready.")
    elif problem is not None:
        put(ConditionType.READY, false, problem.reason, problem.message)
    else:
        put(ConditionType.READY, false, "NoReplicaReady", f"0/{desired} replicas ready.")

    conds = _template_condition(pool, conds, template_conflicts or [], now_iso)

    return {
        "observedGeneration": generation,
        "replicas": replicas,
        "readyReplicas": ready,
        "desiredReplicas": desired,
        "selector": selector_string(pool.metadata.name),
        "conditions": [c.to_wire() for c in conds],
    }


def condition_of(status: dict[str, Any], type_: ConditionType) -> Condition | None:
    """The condition `type_` from a wire-form status, or None."""
    for raw in status.get("conditions", []) or []:
        if raw.get("type") == type_.value:
            return Condition.model_validate(raw)
    return None
