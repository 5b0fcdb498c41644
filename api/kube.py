"""Base model for Kubernetes-shaped objects: camelCase JSON, unknown fields refused, minimal metadata.

Every model in `sloguard.api` that appears in a custom resource derives from `KubeModel`, so the JSON
names follow Kubernetes API conventions (camelCase) while Python code uses snake_case.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class KubeModel(BaseModel):
    """Strict, camelCase-on-the-wire base. Serialise with `to_wire()` to get the Kubernetes JSON form."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=False,
        use_enum_values=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The Kubernetes JSON form: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ObjectMeta(BaseModel):
    """The part of metav1.ObjectMeta SLOGuard reads; everything else is kept but not interpreted."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = None
    generation: int | None = None
    uid: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
