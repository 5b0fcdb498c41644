"""The InferencePool custom resource (namespaced): a model served by vLLM replicas under SLO classes.

The operator turns a pool into a ConfigMap (the sidecar configuration), a Deployment (vLLM beside the
SLOGuard sidecar), a Service and a PodDisruptionBudget, and scales it through the `/scale` subresource
(`spec.replicas`). Kind and group are distinct from the Gateway API Inference Extension's InferencePool
(`inference.networking.k8s.io`), and so are the short names.
"""

from enum import StrEnum
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from sloguard.api.conditions import Condition
from sloguard.api.duration import Duration
from sloguard.api.kube import KubeModel, ObjectMeta
from sloguard.api.policies import SchedulingPolicyName

_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class PoolRole(StrEnum):
    """Chiron-style pool roles: which traffic the pool is sized for and what it may absorb."""

    INTERACTIVE = "Interactive"  # latency-critical classes only; scales on backpressure
    MIXED = "Mixed"  # interactive first, batch fills spare capacity
    BATCH = "Batch"  # deadline-driven classes; scales only when deadlines are at risk


class ResourceRequirements(KubeModel):
    """Container resources as in core/v1, quantities as strings ("8", "32Gi")."""

    requests: dict[str, str] = Field(default_factory=dict, description="Resource requests.")
    limits: dict[str, str] = Field(default_factory=dict, description="Resource limits.")


class EnvVar(KubeModel):
    name: str = Field(min_length=1, max_length=256, description="Variable name.")
    value: str = Field(default="", max_length=32768, description="Variable value.")


class EngineSpec(KubeModel):
    """The vLLM container of each replica."""

    image: str = Field(min_length=1, max_length=512, description="vLLM image, e.g. vllm/vllm-openai:v0.11.0.")
    args: list[str] = Field(
        default_factory=list, max_length=128, description="Extra vLLM arguments, appended after ours."
    )
    env: list[EnvVar] = Field(default_factory=list, max_length=128, description="Extra environment.")
    port: int = Field(default=8000, ge=1, le=65535, description="vLLM's OpenAI HTTP port inside the pod.")
    gpus: int = Field(default=1, ge=0, le=64, description="GPUs per replica (tensor parallel size).")
    gpu_resource_name: str = Field(
        default="nvidia.com/gpu", min_length=1, max_length=253, description="Extended resource for GPUs."
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements, description="CPU and memory for the engine container."
    )
    max_num_seqs: int | None = Field(default=None, ge=1, le=65536, description="vLLM --max-num-seqs.")
    max_model_len: int | None = Field(default=None, ge=1, description="vLLM --max-model-len.")
    startup_time: Duration = Field(
        default="2m",
        description="Expected time from pod start to a ready engine; the autoscaler plans with it.",
    )


class SchedulingSpec(KubeModel):
    """Which sidecar policy orders and admits requests, and its parameters."""

    policy: SchedulingPolicyName = Field(
        default=SchedulingPolicyName.SLOGUARD, description="Registered policy name."
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Policy parameters; validated by the policy, errors reported as a status condition.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class SidecarLimits(KubeModel):
    """Local backpressure bounds of one sidecar (Chiron's local autoscaler works inside them)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.minInFlight <= self.maxInFlight",
                    "message": "minInFlight must be <= maxInFlight",
                }
            ]
        }
    )

    max_queue_depth: int = Field(
        default=1024, ge=0, le=1_000_000, description="Requests waiting in the sidecar."
    )
    min_in_flight: int = Field(
        default=1, ge=1, le=65536, description="Lower bound of the adaptive in-flight cap."
    )
    max_in_flight: int = Field(
        default=256, ge=1, le=65536, description="Upper bound of the adaptive in-flight cap."
    )
    max_prompt_tokens: int = Field(default=32768, ge=1, description="Longer prompts are refused as invalid.")
    max_output_tokens: int = Field(
        default=8192, ge=1, description="Larger max_tokens are refused as invalid."
    )

    @model_validator(mode="after")
    def _check_bounds(self) -> "SidecarLimits":
        if self.min_in_flight > self.max_in_flight:
            raise ValueError("minInFlight must be <= maxInFlight")
        return self


class LatencyProfileSpec(KubeModel):
    """Measured engine latencies: they seed the sidecar's latency model, which keeps learning online."""

    ttft: Duration = Field(description="TTFT of a short prompt on the idle engine, e.g. 14ms.")
    itl: Duration = Field(description="Inter-token time of a single running request, e.g. 4ms.")
    itl_per_sequence: Duration = Field(
        default="0s", description="Extra inter-token time per running sequence."
    )


class SidecarSpec(KubeModel):
    image: str = Field(
        default="ghcr.io/sloguard/sloguard:0.1.0", min_length=1, max_length=512, description="SLOGuard image."
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements, description="CPU and memory for the sidecar container."
    )
    grpc_port: int = Field(default=50051, ge=1, le=65535, description="gRPC Generate/Estimate/Control port.")
    http_port: int = Field(default=8080, ge=1, le=65535, description="OpenAI-compatible HTTP port.")
    metrics_port: int = Field(
        default=9090, ge=1, le=65535, description="Prometheus /metrics and health port."
    )
    drain_grace_period: Duration = Field(
        default="30s", description="How long in-flight streams may run on after a drain starts."
    )
    limits: SidecarLimits = Field(default_factory=SidecarLimits, description="Local backpressure bounds.")
    latency_profile: LatencyProfileSpec | None = Field(
        default=None, description="Seed for the sidecar's latency model; without it, it learns from scratch."
    )


class AutoscalingSpec(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!self.enabled || has(self.prometheusUrl)",
                    "message": "prometheusUrl is required when autoscaling is enabled",
                }
            ]
        }
    )

    enabled: bool = Field(default=False, description="Let the operator set replicas from SLO backpressure.")
    interval: Duration = Field(default="15s", description="Time between two scaling decisions.")
    prometheus_url: str | None = Field(
        default=None, max_length=2048, pattern=r"^https?://", description="Prometheus base URL."
    )
    scale_up_cooldown: Duration = Field(default="30s", description="Minimum time between two scale-ups.")
    scale_down_cooldown: Duration = Field(
        default="5m", description="Minimum time after any change before a scale-down."
    )
    max_scale_up_step: int = Field(
        default=4, ge=1, le=1000, description="Most replicas added in one decision."
    )
    max_scale_down_step: int = Field(
        default=1, ge=1, le=1000, description="Most replicas removed in one decision."
    )
    headroom: float = Field(
        default=0.2, ge=0.0, le=4.0, description="Spare capacity kept above the measured need, as a fraction."
    )

    @model_validator(mode="after")
    def _check_url(self) -> "AutoscalingSpec":
        if self.enabled and self.prometheus_url is None:
            raise ValueError("prometheusUrl is required when autoscaling is enabled")
        return self


class InferencePoolSpec(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.minReplicas <= self.maxReplicas",
                    "message": "minReplicas must be <= maxReplicas",
                },
            ]
        }
    )

    model: str = Field(min_length=1, max_length=512, description="Model name served, as vLLM's --model.")
    served_model_name: str | None = Field(
        default=None, max_length=512, description="Name clients send in `model`; defaults to `model`."
    )
    engine: EngineSpec = Field(description="The vLLM container.")
    slo_classes: list[str] = Field(
        min_length=1,
        max_length=64,
        description="Names of the SLOClasses this pool serves.",
        json_schema_extra={
            "x-kubernetes-list-type": "set",
            "items": {"type": "string", "pattern": _NAME_PATTERN},
        },
    )
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec, description="Sidecar policy.")
    replicas: int | None = Field(
        default=None, ge=0, le=10000, description="Desired replicas; written through the /scale subresource."
    )
    min_replicas: int = Field(default=1, ge=0, le=10000, description="Lower scaling bound.")
    max_replicas: int = Field(default=1, ge=1, le=10000, description="Upper scaling bound.")
    autoscaling: AutoscalingSpec = Field(
        default_factory=AutoscalingSpec, description="SLO-driven autoscaling."
    )
    sidecar: SidecarSpec = Field(default_factory=SidecarSpec, description="The SLOGuard sidecar container.")
    role: PoolRole = Field(
        default=PoolRole.MIXED, description="Interactive, Mixed or Batch (Chiron-style pools)."
    )

    @model_validator(mode="after")
    def _check_replicas(self) -> "InferencePoolSpec":
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be <= maxReplicas")
        if len(set(self.slo_classes)) != len(self.slo_classes):
            raise ValueError("sloClasses must not repeat a name")
        return self


class ClassObservation(KubeModel):
    """Observed latency of one class over its attainment window."""

    name: str = Field(description="SLOClass name.")
    attainment: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Fraction meeting TTFT and TPOT."
    )
    target: float | None = Field(default=None, ge=0.0, le=1.0, description="The class's attainment target.")
    ttft_p50_ms: float | None = Field(default=None, ge=0.0, description="Median time to first token.")
    ttft_p99_ms: float | None = Field(
        default=None, ge=0.0, description="99th percentile time to first token."
    )
    tpot_p50_ms: float | None = Field(default=None, ge=0.0, description="Median time per output token.")
    tpot_p99_ms: float | None = Field(
        default=None, ge=0.0, description="99th percentile time per output token."
    )


class ScalingDecisionRecord(KubeModel):
    time: str = Field(description="RFC 3339 time of the decision.")
    from_replicas: int = Field(ge=0, description="Replicas before.")
    to_replicas: int = Field(ge=0, description="Replicas decided.")
    reason: str = Field(max_length=1024, description="Why, in words.")


class InferencePoolStatus(KubeModel):
    observed_generation: int | None = Field(default=None, description="Generation the status reflects.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing, Degraded, SLOAtRisk, ScalingLimited, MetricsUnavailable.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    replicas: int | None = Field(default=None, ge=0, description="Pods of the pool's Deployment.")
    ready_replicas: int | None = Field(default=None, ge=0, description="Ready pods.")
    desired_replicas: int | None = Field(default=None, ge=0, description="Replicas the operator asks for.")
    selector: str | None = Field(default=None, description="Label selector of the pods, for /scale.")
    classes: list[ClassObservation] = Field(
        default_factory=list,
        description="Per-class observed attainment and latency.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    last_scaling: ScalingDecisionRecord | None = Field(default=None, description="The last scaling decision.")


class InferencePool(KubeModel):
    api_version: Literal["sloguard.dev/v1alpha1"] = "sloguard.dev/v1alpha1"
    kind: Literal["InferencePool"] = "InferencePool"
    metadata: ObjectMeta
    spec: InferencePoolSpec
    status: InferencePoolStatus | None = None
