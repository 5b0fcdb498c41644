"""The InferencePool custom resource (namespaced): a model served by vLLM replicas under SLO classes.

The operator turns a pool into a ConfigMap (the sidecar configuration), a Deployment (vLLM beside the
SLOGuard sidecar), a Service and a PodDisruptionBudget, and scales it through the `/scale` subresource
(`spec.replicas`). Kind and group are distinct from the Gateway API Inference Extension's InferencePool
(`inference.networking.k8s.io`), and so are the short names.
"""

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, WithJsonSchema, model_validator

from sloguard.api.conditions import Condition
from sloguard.api.duration import Duration, PositiveDuration
from sloguard.api.kube import KubeModel, ObjectMeta
from sloguard.api.pod_template import EnvVar, PodTemplateOverride, ResourceRequirements
from sloguard.api.policies import SchedulingPolicyName
from sloguard.api.prometheus_connection import PrometheusConnectionSpec

_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class PoolRole(StrEnum):
    """Chiron-style pool roles: which traffic the pool is sized for and what it may absorb."""

    INTERACTIVE = "Interactive"  # latency-critical classes only; scales on backpressure
    MIXED = "Mixed"  # interactive first, batch fills spare capacity
    BATCH = "Batch"  # deadline-driven classes; scales only when deadlines are at risk


class EngineSpec(KubeModel):
    """The vLLM container of each replica."""

    image: str = Field(min_length=1, max_length=512, description="vLLM image, e.g. vllm/vllm-openai:v0.11.0.")
    args: list[str] = Field(
        default_factory=list, max_length=128, description="Extra vLLM arguments, appended after ours."
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=128,
        description="Extra environment, keyed on name: a value, or valueFrom a Secret, ConfigMap or field.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
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
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="SLOGuard image; unset means the operator's sidecar image (follows operator upgrades).",
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements, description="CPU and memory for the sidecar container."
    )
    grpc_port: int = Field(default=50051, ge=1, le=65535, description="gRPC Generate/Estimate port.")
    http_port: int = Field(default=8080, ge=1, le=65535, description="OpenAI-compatible HTTP port.")
    metrics_port: int = Field(
        default=9090, ge=1, le=65535, description="Prometheus /metrics and health port."
    )
    control_port: int = Field(
        default=50052,
        ge=1,
        le=65535,
        description="gRPC Control port (Drain, SetLimits, GetState), bound to the pod's loopback only: "
        "reach it with kubectl port-forward or exec, never through the Service.",
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
                    "rule": "!self.enabled || has(self.prometheusUrl)"
                    " || (has(self.prometheus) && has(self.prometheus.url))",
                    "message": "prometheus.url (or prometheusUrl) is required when autoscaling is enabled",
                },
                {
                    "rule": "!(has(self.prometheusUrl) && has(self.prometheus) && has(self.prometheus.url))",
                    "message": "set prometheus.url or prometheusUrl, not both",
                },
            ]
        }
    )

    enabled: bool = Field(default=False, description="Let the operator set replicas from SLO backpressure.")
    interval: PositiveDuration = Field(default="15s", description="Time between two scaling decisions (> 0).")
    prometheus_url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://",
        description="Prometheus base URL; prometheus.url is the newer spelling, with TLS and auth beside it.",
    )
    prometheus: PrometheusConnectionSpec | None = Field(
        default=None,
        description="Where and how to query Prometheus: URL, CA bundle, bearer token or basic auth.",
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
        nested = None if self.prometheus is None else self.prometheus.url
        if self.prometheus_url is not None and nested is not None:
            raise ValueError("set prometheus.url or prometheusUrl, not both")
        if self.enabled and self.prometheus_url is None and nested is None:
            raise ValueError("prometheus.url (or prometheusUrl) is required when autoscaling is enabled")
        return self

    @property
    def prometheus_base_url(self) -> str | None:
        """The Prometheus URL, from either spelling."""
        return self.prometheus_url or (None if self.prometheus is None else self.prometheus.url)


_SIDECAR_PORT_DEFAULTS = {"grpcPort": 50051, "httpPort": 8080, "metricsPort": 9090, "controlPort": 50052}
_PORTS_DIFFER = (
    "engine.port and the sidecar's grpcPort, httpPort, metricsPort and controlPort must all differ"
)


def _ports_cel() -> str:
    """CEL: the five ports of a pod differ (absent fields count with their defaults; the API server
    applies no default to an absent `sidecar` object, so each field is guarded)."""
    ports = ["(has(self.engine.port) ? self.engine.port : 8000)"] + [
        f"(has(self.sidecar) && has(self.sidecar.{name}) ? self.sidecar.{name} : {default})"
        for name, default in _SIDECAR_PORT_DEFAULTS.items()
    ]
    listed = f"[{', '.join(ports)}]"
    return f"{listed}.all(p, {listed}.filter(q, q == p).size() == 1)"


IntOrPercent = Annotated[
    int | str,
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": r"^[0-9]+%$",
            "x-kubernetes-int-or-string": True,
        }
    ),
]


class RolloutSpec(KubeModel):
    """How the pool's Deployment replaces pods (RollingUpdate). The default never needs a spare GPU:
    pools with GPUs replace one pod at a time in place (maxSurge 0, maxUnavailable 1), so a rollout on a
    full GPU pool does not stall waiting for a node; CPU-only pools surge one pod (maxUnavailable 0)."""

    max_surge: IntOrPercent | None = Field(default=None, description="Pods above the desired count.")
    max_unavailable: IntOrPercent | None = Field(default=None, description="Pods below the desired count.")

    @model_validator(mode="after")
    def _check(self) -> "RolloutSpec":
        for value in (self.max_surge, self.max_unavailable):
            if isinstance(value, bool) or (isinstance(value, int) and value < 0):
                raise ValueError(f"invalid rollout bound {value!r}: a count >= 0 or a percentage")
            if isinstance(value, str) and not re.fullmatch(r"[0-9]+%", value):
                raise ValueError(
                    f"invalid rollout bound {value!r}: a count >= 0 or a percentage such as '25%'"
                )
        return self


class InferencePoolSpec(KubeModel):
    """The desired state of a pool: which model, on which engine image and GPUs, under which SLO classes
    and scheduling policy, between which replica bounds, with what sidecar limits, autoscaling, rollout
    and pod template additions (tolerations, node selectors, secrets, volumes)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.minReplicas <= self.maxReplicas",
                    "message": "minReplicas must be <= maxReplicas",
                },
                {"rule": _ports_cel(), "message": _PORTS_DIFFER},
            ]
        }
    )

    model: str = Field(
        min_length=1,
        max_length=512,
        description="Model served (vLLM's positional model argument): a Hugging Face id or a local path.",
    )
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
    rollout: RolloutSpec | None = Field(default=None, description="Rolling update bounds of the pods.")
    pod_template: PodTemplateOverride | None = Field(
        default=None,
        description="Merged over the generated pod (strategic merge: containers engine and sidecar by name, "
        "volumes and env by name); the operator's own ports, probes and config volume win.",
    )

    @model_validator(mode="after")
    def _check_replicas(self) -> "InferencePoolSpec":
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be <= maxReplicas")
        sidecar = self.sidecar
        ports = [
            self.engine.port,
            sidecar.grpc_port,
            sidecar.http_port,
            sidecar.metrics_port,
            sidecar.control_port,
        ]
        if len(set(ports)) != len(ports):
            raise ValueError(f"{_PORTS_DIFFER} (got {ports})")
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
    time: str = Field(description="RFC 3339 time of the decision.", json_schema_extra={"format": "date-time"})
    from_replicas: int = Field(ge=0, description="Replicas before.")
    to_replicas: int = Field(ge=0, description="Replicas decided.")
    reason: str = Field(max_length=1024, description="Why, in words.")


class CapBoundsStatus(KubeModel):
    """Per-pod in-flight cap bounds the autoscaler chose; the operator renders them into the sidecars'
    configuration (always inside `spec.sidecar.limits`)."""

    min_in_flight: int = Field(ge=1, le=65536, description="Lower bound of the adaptive in-flight cap.")
    max_in_flight: int = Field(ge=1, le=65536, description="Upper bound of the adaptive in-flight cap.")


class InferencePoolStatus(KubeModel):
    observed_generation: int | None = Field(default=None, description="Generation the status reflects.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing, Degraded, SLOAtRisk, ScalingLimited, MetricsUnavailable, "
        "PodTemplateConflict.",
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
    cap_bounds: CapBoundsStatus | None = Field(
        default=None, description="Per-pod in-flight cap bounds chosen by the autoscaler."
    )


class InferencePool(KubeModel):
    api_version: Literal["sloguard.dev/v1alpha1"] = "sloguard.dev/v1alpha1"
    kind: Literal["InferencePool"] = "InferencePool"
    metadata: ObjectMeta
    spec: InferencePoolSpec
    status: InferencePoolStatus | None = None
