"""The sidecar configuration file: what the operator writes into a pool's ConfigMap and the sidecar loads.

Internal format, so snake_case keys and seconds (`ttft_s`). The operator renders it with
`sidecar_config_for_pool`; the sidecar validates it with `SidecarConfig.model_validate` on start-up and
on every hot reload, refusing a bad file and keeping the old one.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sloguard.api.duration import parse_duration_s
from sloguard.api.inferencepool import InferencePool, LatencyProfileSpec, SidecarLimits
from sloguard.api.policies import SchedulingPolicyName
from sloguard.api.sloclass import OnUnattainable, SLOClass

CONFIG_FILE_NAME = "sidecar.json"
"""Key of the configuration in the pool's ConfigMap and file name under the mounted directory."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SLOClassConfig(_Strict):
    """One SLO class as the sidecar uses it, times in seconds."""

    name: str = Field(min_length=1, max_length=253)
    ttft_s: float = Field(gt=0.0, le=86400.0)
    tpot_s: float = Field(gt=0.0, le=3600.0)
    deadline_s: float | None = Field(default=None, gt=0.0, le=7 * 86400.0)
    priority: int = 0
    attainment_target: float = Field(default=0.99, gt=0.0, le=1.0)
    attainment_window_s: float = Field(default=300.0, gt=0.0)
    on_unattainable: OnUnattainable = OnUnattainable.REJECT
    default: bool = False

    @classmethod
    def from_resource(cls, slo_class: SLOClass) -> "SLOClassConfig":
        spec = slo_class.spec
        return cls(
            name=slo_class.metadata.name,
            ttft_s=spec.ttft_s,
            tpot_s=spec.tpot_s,
            deadline_s=spec.deadline_s,
            priority=spec.priority,
            attainment_target=spec.attainment.target,
            attainment_window_s=parse_duration_s(spec.attainment.window),
            on_unattainable=spec.on_unattainable,
            default=spec.default,
        )


class PolicyConfig(_Strict):
    name: SchedulingPolicyName = SchedulingPolicyName.SLOGUARD
    parameters: dict[str, Any] = Field(default_factory=dict)


class EngineConfig(_Strict):
    url: str = Field(default="http://127.0.0.1:8000", pattern=r"^https?://")
    scheduling_policy: Literal["fcfs", "priority"] = "fcfs"
    model: str = Field(default="", description="Model name to send upstream; empty means the client's.")
    max_num_seqs: int | None = Field(default=None, ge=1)


class LatencyProfile(_Strict):
    """Measured latencies of the engine a sidecar fronts: they seed its latency model, which keeps learning
    online from what it observes (sidecar/core/latency.py `LatencyModel.from_profile`). Without one, the
    model starts from generic coefficients and learns the engine from its first few dozen requests."""

    ttft_s: float = Field(gt=0.0, le=600.0, description="TTFT of a short prompt on the idle engine.")
    itl_s: float = Field(gt=0.0, le=60.0, description="Inter-token time of a single running request.")
    prefill_per_token_s: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Extra TTFT per prompt token past prefill_flat_tokens."
    )
    prefill_flat_tokens: int = Field(default=256, ge=1, le=1 << 20)
    itl_per_sequence_s: float = Field(
        default=0.0, ge=0.0, le=10.0, description="Extra inter-token time per running sequence."
    )


class RelayConfig(_Strict):
    """How the sidecar reads a streaming answer from the engine (sidecar/core/relay_hold.py). Past the
    first token, a stream with TPOT slack is read at most every `hold_max_s` instead of every token: the
    tokens the engine makes meanwhile are relayed in one write. The first token is never held, and a hold
    never takes a request past `tpot_share` of its TPOT or of the time left to its deadline; by default a
    stream is held only while the sidecar holds requests back (its last release round left some queued).
    Where the engine supports it (vLLM's per-request `stream_interval`), the engine is also asked to send a
    request's tokens several at a time: the first and the last at once, no other waiting longer than
    `stream_interval_max_s`."""

    hold_max_s: float = Field(
        default=0.025, ge=0.0, le=1.0, description="Longest hold between two reads of a stream; 0: off."
    )
    tpot_share: float = Field(
        default=0.5, gt=0.0, le=1.0, description="Share of the class's TPOT a hold may bring a stream to."
    )
    only_while_queued: bool = Field(
        default=True, description="Hold only while the sidecar holds requests back (false: always)."
    )
    stream_interval_max_s: float = Field(
        default=0.025,
        ge=0.0,
        le=1.0,
        description=(
            "Longest a token may wait in the engine to be sent with the next ones (vLLM's per-request "
            "stream_interval, sidecar/core/stream_interval.py); the first and last never wait. 0: off."
        ),
    )


class PoolRef(_Strict):
    name: str = "local"
    namespace: str = "default"


class SidecarConfig(_Strict):
    version: Literal[1] = 1
    pool: PoolRef = Field(default_factory=PoolRef)
    classes: list[SLOClassConfig] = Field(min_length=1)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    limits: SidecarLimits = Field(default_factory=SidecarLimits)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    latency_profile: LatencyProfile | None = None
    relay: RelayConfig = Field(default_factory=RelayConfig)
    drain_grace_s: float = Field(default=30.0, ge=0.0, le=3600.0)
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    http_port: int = Field(default=8080, ge=0, le=65535)
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    control_port: int = Field(default=0, ge=0, le=65535)
    """The Control gRPC service (Drain, SetLimits, GetState): its own server, never on `grpc_port`. The
    operator renders the pool's `sidecar.controlPort`; 0 (local runs) picks a free port and logs it."""
    control_host: str = Field(default="127.0.0.1", min_length=1)
    """Where Control listens: the pod's loopback, so only `kubectl port-forward`/`exec` (and whatever
    runs inside the pod) reach it; the pool's Services and other pods do not."""

    @model_validator(mode="after")
    def _check_classes(self) -> "SidecarConfig":
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate SLO class names: {sorted(names)}")
        defaults = [c.name for c in self.classes if c.default]
        if len(defaults) > 1:
            raise ValueError(f"at most one default SLO class, got {defaults}")
        return self

    def class_named(self, name: str) -> SLOClassConfig | None:
        return next((c for c in self.classes if c.name == name), None)

    @property
    def default_class(self) -> SLOClassConfig | None:
        return next((c for c in self.classes if c.default), None)


def sidecar_config_for_pool(pool: InferencePool, classes: list[SLOClass]) -> SidecarConfig:
    """The configuration the sidecars of `pool` run with; `classes` are the SLOClasses it references."""
    spec = pool.spec
    by_name = {c.metadata.name: c for c in classes}
    missing = [name for name in spec.slo_classes if name not in by_name]
    if missing:
        raise ValueError(f"SLOClass not found: {', '.join(missing)}")
    policy = spec.scheduling.policy
    return SidecarConfig(
        pool=PoolRef(name=pool.metadata.name, namespace=pool.metadata.namespace or "default"),
        classes=[SLOClassConfig.from_resource(by_name[name]) for name in spec.slo_classes],
        policy=PolicyConfig(name=policy, parameters=dict(spec.scheduling.parameters)),
        limits=spec.sidecar.limits,
        engine=EngineConfig(
            url=f"http://127.0.0.1:{spec.engine.port}",
            scheduling_policy="priority" if policy.stamps_engine_priority else "fcfs",
            model=spec.served_model_name or spec.model,
            max_num_seqs=spec.engine.max_num_seqs,
        ),
        latency_profile=_latency_profile(spec.sidecar.latency_profile),
        drain_grace_s=parse_duration_s(spec.sidecar.drain_grace_period),
        grpc_port=spec.sidecar.grpc_port,
        http_port=spec.sidecar.http_port,
        metrics_port=spec.sidecar.metrics_port,
        control_port=spec.sidecar.control_port,
    )


def _latency_profile(spec: LatencyProfileSpec | None) -> LatencyProfile | None:
    if spec is None:
        return None
    return LatencyProfile(
        ttft_s=parse_duration_s(spec.ttft),
        itl_s=parse_duration_s(spec.itl),
        itl_per_sequence_s=parse_duration_s(spec.itl_per_sequence),
    )
