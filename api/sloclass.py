"""The SLOClass custom resource (cluster-scoped, like PriorityClass): one latency objective.

Users reference classes by name from InferencePools and from requests (`x-slo-class`). The operator
copies each referenced class, converted to seconds, into the pool's sidecar configuration.
"""

from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from sloguard.api.conditions import Condition
from sloguard.api.duration import Duration, parse_duration_s
from sloguard.api.kube import KubeModel, ObjectMeta


class OnUnattainable(StrEnum):
    """What the sidecar does with a request that can no longer meet its class."""

    REJECT = "Reject"  # answer at once (gRPC RESOURCE_EXHAUSTED / HTTP 429) so the client can go elsewhere
    BEST_EFFORT = "BestEffort"  # keep it, demoted behind every request that can still meet its SLO


class AttainmentTarget(KubeModel):
    """The fraction of requests that must meet the class, measured over a sliding window."""

    target: float = Field(
        default=0.99, gt=0.0, le=1.0, description="Required fraction of requests meeting TTFT and TPOT."
    )
    window: Duration = Field(default="5m", description="Sliding window the fraction is measured over.")


class SLOClassSpec(KubeModel):
    """Latency objective of one class of requests."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "duration(self.ttft) > duration('0s')", "message": "ttft must be greater than 0"},
                {"rule": "duration(self.tpot) > duration('0s')", "message": "tpot must be greater than 0"},
                {
                    "rule": "!has(self.deadline) || duration(self.deadline) >= duration(self.ttft)",
                    "message": "deadline must be at least ttft",
                },
            ]
        }
    )

    ttft: Duration = Field(description="Time-to-first-token target, e.g. 500ms.")
    tpot: Duration = Field(description="Time-per-output-token target (mean inter-token time), e.g. 50ms.")
    deadline: Duration | None = Field(
        default=None, description="Optional end-to-end deadline from arrival to the last token, e.g. 30s."
    )
    priority: int = Field(
        default=0,
        ge=-1_000_000,
        le=1_000_000,
        description="Higher is more important (PriorityClass polarity); breaks ties between classes.",
    )
    attainment: AttainmentTarget = Field(
        default_factory=AttainmentTarget, description="Required attainment and its measurement window."
    )
    on_unattainable: OnUnattainable = Field(
        default=OnUnattainable.REJECT,
        description="Reject a request that can no longer meet the class, or serve it best-effort.",
    )
    default: bool = Field(
        default=False, description="Requests that name no class get this one (at most one per pool)."
    )
    description: str | None = Field(default=None, max_length=1024, description="Free text for humans.")

    @model_validator(mode="after")
    def _check_cross_fields(self) -> "SLOClassSpec":
        # Mirrors the CEL rules above so that Python callers get the same verdict as the API server.
        if self.ttft_s <= 0:
            raise ValueError("ttft must be greater than 0")
        if self.tpot_s <= 0:
            raise ValueError("tpot must be greater than 0")
        if self.deadline_s is not None and self.deadline_s < self.ttft_s:
            raise ValueError("deadline must be at least ttft")
        return self

    @property
    def ttft_s(self) -> float:
        return parse_duration_s(self.ttft)

    @property
    def tpot_s(self) -> float:
        return parse_duration_s(self.tpot)

    @property
    def deadline_s(self) -> float | None:
        return None if self.deadline is None else parse_duration_s(self.deadline)


class SLOClassStatus(KubeModel):
    observed_generation: int | None = Field(default=None, description="Generation the status reflects.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Accepted, with a reason.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    pools: list[str] = Field(
        default_factory=list, description="InferencePools (namespace/name) that serve this class."
    )


class SLOClass(KubeModel):
    api_version: Literal["sloguard.dev/v1alpha1"] = "sloguard.dev/v1alpha1"
    kind: Literal["SLOClass"] = "SLOClass"
    metadata: ObjectMeta
    spec: SLOClassSpec
    status: SLOClassStatus | None = None
