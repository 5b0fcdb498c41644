"""Kubernetes resource quantities ("8", 8, "500m", "32Gi") as int-or-string, the way core/v1 types them.

Used by every `resources` field of the InferencePool CRD (`sloguard.api.inferencepool`,
`sloguard.api.pod_template`). The model keeps what the user wrote (an int stays an int, GitOps), the CRD
schema carries `x-kubernetes-int-or-string` with core's quantity pattern, and pydantic checks the same
pattern so the operator refuses what the API server would.
"""

import re
from typing import Annotated, Any

from pydantic import AfterValidator, WithJsonSchema

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
"""The pattern controller-gen emits for resource.Quantity (core's own CRDs use the same)."""

_QUANTITY_RE = re.compile(QUANTITY_PATTERN)


def _validate(value: int | str) -> int | str:
    if isinstance(value, bool):
        raise ValueError("a quantity is a number or a string such as '8', '500m' or '32Gi', not a boolean")
    if isinstance(value, int):
        return value
    if not _QUANTITY_RE.match(value):
        raise ValueError(f"invalid quantity {value!r}: expected e.g. 8, '500m', '1.5', '32Gi' or '1e3'")
    return value


QUANTITY_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "pattern": QUANTITY_PATTERN,
    "x-kubernetes-int-or-string": True,
}

Quantity = Annotated[
    int | str,
    AfterValidator(_validate),
    WithJsonSchema(QUANTITY_SCHEMA),
]
"""A resource quantity: an integer or a quantity string."""

ResourceList = dict[str, Quantity]
