"""What a pool should look like right now: its children, or the problem that keeps them from being built.

Pure, level-based: the whole desired state is recomputed from the pool and the SLOClasses on every call,
so a resync, a spec edit and an SLOClass edit all take the same path. `sloguard.operator.reconcile`
applies the result.
"""

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from sloguard.api.inferencepool import InferencePool
from sloguard.api.sidecar_config import sidecar_config_for_pool
from sloguard.api.sloclass import SLOClass
from sloguard.operator.core.cap_bounds import effective_limits
from sloguard.operator.core.children import DEFAULT_SIDECAR_IMAGE, build_children, pod_template
from sloguard.operator.core.status import Problem


@dataclass(frozen=True)
class PoolPlan:
    pool: InferencePool
    children: list[dict[str, Any]] = field(default_factory=list)
    problem: Problem | None = None
    template_conflicts: list[str] = field(default_factory=list)
    """`spec.podTemplate` fields the operator overrode (its own ports, probes, config volume)."""


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def parse_pool(body: dict[str, Any]) -> InferencePool:
    """The pool model; raises ValueError with a one-line message when the spec does not parse."""
    try:
        return InferencePool.model_validate(body)
    except ValidationError as err:
        raise ValueError(_first_error(err)) from None


def plan_pool(
    pool: InferencePool,
    class_bodies: dict[str, dict[str, Any]],
    *,
    sidecar_image: str = DEFAULT_SIDECAR_IMAGE,
) -> PoolPlan:
    """Children of `pool`, given every SLOClass object by name (missing names are a Problem);
    `sidecar_image` is the operator's image for sidecars the pool does not pin."""
    missing = sorted(n for n in pool.spec.slo_classes if n not in class_bodies)
    if missing:
        return PoolPlan(
            pool, problem=Problem("SLOClassNotFound", f"SLOClass not found: {', '.join(missing)}")
        )
    classes: list[SLOClass] = []
    for name in pool.spec.slo_classes:
        try:
            classes.append(SLOClass.model_validate(class_bodies[name]))
        except ValidationError as err:
            return PoolPlan(pool, problem=Problem("InvalidSLOClass", f"SLOClass {name}: {_first_error(err)}"))
    try:
        config = sidecar_config_for_pool(pool, classes)
    except ValidationError as err:
        return PoolPlan(pool, problem=Problem("InvalidSLOClasses", _first_error(err)))
    except ValueError as err:
        return PoolPlan(pool, problem=Problem("InvalidSLOClasses", str(err)))
    config = config.model_copy(update={"limits": effective_limits(pool)})  # autoscaler's cap bounds
    return PoolPlan(
        pool,
        children=build_children(pool, config, sidecar_image),
        template_conflicts=pod_template(pool, sidecar_image).conflicts,
    )
