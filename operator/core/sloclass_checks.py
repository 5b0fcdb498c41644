"""SLOClass checks beyond the schema, the pools that use a class, and the class's status.

Pure. The CRD schema and its CEL rules already refuse malformed classes at admission; these checks need
other objects or judgement the schema cannot express:

- the spec must parse with the API model (catches clusters where CEL validation is off);
- the attainment window must be longer than one request can take (`deadline`, else `ttft`), or the
  attainment it measures is meaningless;
- at most one class served by the same pool may be `default: true` (the sidecar refuses two).
"""

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from sloguard.api.conditions import Condition, ConditionStatus, ConditionType, set_condition
from sloguard.api.duration import parse_duration_s
from sloguard.api.inferencepool import InferencePool
from sloguard.api.sloclass import SLOClass


def parse_sloclass(body: dict[str, Any]) -> tuple[SLOClass | None, str]:
    """The model, or None with a one-line message of what is wrong."""
    try:
        return SLOClass.model_validate(body), ""
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return None, f"{where}: {first['msg']}" if where else first["msg"]


def pools_using(class_name: str, pools: Iterable[InferencePool]) -> list[str]:
    """Sorted `namespace/name` of every pool whose `sloClasses` names the class."""
    return sorted(
        f"{p.metadata.namespace or 'default'}/{p.metadata.name}"
        for p in pools
        if class_name in p.spec.slo_classes
    )


def acceptance(
    slo_class: SLOClass, *, pools: Iterable[InferencePool], classes: Iterable[SLOClass]
) -> tuple[bool, str, str]:
    """(accepted, reason, message) for the Accepted condition."""
    spec = slo_class.spec
    name = slo_class.metadata.name
    window_s = parse_duration_s(spec.attainment.window)
    longest_s = spec.deadline_s if spec.deadline_s is not None else spec.ttft_s
    if window_s < longest_s:
        return (
            False,
            "AttainmentWindowTooShort",
            f"attainment.window {spec.attainment.window} is shorter than one request may take "
            f"({spec.deadline or spec.ttft}).",
        )
    if spec.default:
        other_defaults = {c.metadata.name for c in classes if c.spec.default and c.metadata.name != name}
        for pool in pools:
            clash = sorted(other_defaults & set(pool.spec.slo_classes))
            if name in pool.spec.slo_classes and clash:
                return (
                    False,
                    "ConflictingDefault",
                    f"pool {pool.metadata.namespace}/{pool.metadata.name} also serves default class "
                    f"{', '.join(clash)}; at most one default per pool.",
                )
    return True, "Valid", "The class passed every check."


def sloclass_status(
    body: dict[str, Any],
    *,
    pools: list[InferencePool],
    classes: list[SLOClass],
    now_iso: str,
) -> dict[str, Any]:
    """Wire-form status of an SLOClass object (possibly unparsable) given every pool and class."""
    metadata = body.get("metadata", {})
    name = metadata.get("name", "")
    generation = metadata.get("generation")
    previous = [Condition.model_validate(c) for c in (body.get("status") or {}).get("conditions", []) or []]
    parsed, error = parse_sloclass(body)
    if parsed is None:
        accepted, reason, message = False, "InvalidSpec", error
    else:
        accepted, reason, message = acceptance(parsed, pools=pools, classes=classes)
    conditions = set_condition(
        previous,
        type_=ConditionType.ACCEPTED.value,
        status=ConditionStatus.TRUE if accepted else ConditionStatus.FALSE,
        reason=reason,
        message=message,
        now_iso=now_iso,
        observed_generation=generation,
    )
    return {
        "observedGeneration": generation,
        "conditions": [c.to_wire() for c in conditions],
        "pools": pools_using(name, pools),
    }
