"""The pool's pod template override (`spec.podTemplate`): what a GPU cluster needs added to the pod.

The operator generates the whole pod of an InferencePool (`sloguard.operator.core.children`); this
model is the part a user may add or change: pod labels and annotations, tolerations, nodeSelector,
affinity, volumes (a model-cache PVC, a Secret), imagePullSecrets, serviceAccountName,
runtimeClassName, priorityClassName, and per container (`engine`, `sidecar`, or an extra one) env with
`valueFrom`, envFrom, resources, volumeMounts and more. `sloguard.operator.core.pod_template` merges it
over the generated pod with strategic-merge semantics and reports what it refused to override.

The fields follow core/v1 PodTemplateSpec and carry its validation where it matters here (names,
enums, exactly one volume or env source, quantities); the deep structures the operator never reads
(affinity terms, probes, security contexts, CSI and projected volumes) are kept as the user wrote them
and left to the API server's validation of the Deployment.
"""

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from sloguard.api.kube import KubeModel
from sloguard.api.quantity import Quantity

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
_FREE_FORM: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}


def _exactly_one(fields: list[str], what: str) -> dict[str, Any]:
    present = ", ".join(f"has(self.{name})" for name in fields)
    return {"rule": f"[{present}].exists_one(x, x)", "message": f"exactly one of {', '.join(fields)} {what}"}


class KeySelector(KubeModel):
    name: str = Field(min_length=1, max_length=253, description="Name of the Secret or ConfigMap.")
    key: str = Field(min_length=1, max_length=253, description="The key to select.")
    optional: bool | None = Field(default=None, description="Whether the object or key may be missing.")


class FieldSelector(KubeModel):
    field_path: str = Field(min_length=1, description="Path of the pod field, e.g. metadata.namespace.")
    api_version: str | None = Field(default=None, description="Schema version of fieldPath.")


class ResourceFieldSelector(KubeModel):
    resource: str = Field(min_length=1, description="Resource to expose, e.g. limits.memory.")
    container_name: str | None = Field(default=None, description="Container whose resource to read.")
    divisor: Quantity | None = Field(default=None, description="Output format, e.g. 1Mi.")


_ENV_SOURCES = ["secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef"]


class EnvVarSource(KubeModel):
    """Where an environment variable's value comes from (core/v1 EnvVarSource)."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [_exactly_one(_ENV_SOURCES, "is set")]}
    )

    secret_key_ref: KeySelector | None = Field(default=None, description="A key of a Secret (e.g. HF_TOKEN).")
    config_map_key_ref: KeySelector | None = Field(default=None, description="A key of a ConfigMap.")
    field_ref: FieldSelector | None = Field(default=None, description="A field of the pod.")
    resource_field_ref: ResourceFieldSelector | None = Field(
        default=None, description="A resource of a container."
    )

    @model_validator(mode="after")
    def _check_one(self) -> "EnvVarSource":
        fields = ("secret_key_ref", "config_map_key_ref", "field_ref", "resource_field_ref")
        if sum(getattr(self, f) is not None for f in fields) != 1:
            raise ValueError(f"exactly one of {', '.join(_ENV_SOURCES)} is set")
        return self


class EnvVar(KubeModel):
    """One environment variable: a literal `value` or a `valueFrom` source, not both."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.value) && has(self.valueFrom))",
                    "message": "value and valueFrom are exclusive",
                }
            ]
        }
    )

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME, description="Variable name.")
    value: str | None = Field(default=None, max_length=32768, description="Variable value.")
    value_from: EnvVarSource | None = Field(default=None, description="Where the value comes from.")

    @model_validator(mode="after")
    def _check_exclusive(self) -> "EnvVar":
        if self.value is not None and self.value_from is not None:
            raise ValueError("value and valueFrom are exclusive")
        return self


class ObjectRef(KubeModel):
    name: str = Field(min_length=1, max_length=253, description="Name of the Secret or ConfigMap.")
    optional: bool | None = Field(default=None, description="Whether it may be missing.")


class EnvFromSource(KubeModel):
    """Every key of a Secret or ConfigMap as environment variables."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [_exactly_one(["secretRef", "configMapRef"], "is set")]
        }
    )

    prefix: str | None = Field(default=None, max_length=253, description="Prepended to every key.")
    secret_ref: ObjectRef | None = Field(default=None, description="The Secret.")
    config_map_ref: ObjectRef | None = Field(default=None, description="The ConfigMap.")

    @model_validator(mode="after")
    def _check_one(self) -> "EnvFromSource":
        if (self.secret_ref is None) == (self.config_map_ref is None):
            raise ValueError("exactly one of secretRef, configMapRef is set")
        return self


class ResourceRequirements(KubeModel):
    """Container resources as in core/v1; quantities are int-or-string (8, "8", "500m", "32Gi")."""

    requests: dict[str, Quantity] | None = Field(default=None, description="Resource requests.")
    limits: dict[str, Quantity] | None = Field(default=None, description="Resource limits.")


class VolumeMount(KubeModel):
    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL, description="Volume name.")
    mount_path: str = Field(min_length=1, pattern=r"^/", description="Absolute path in the container.")
    read_only: bool | None = Field(default=None, description="Mount read-only.")
    sub_path: str | None = Field(default=None, description="Sub-path of the volume to mount.")
    mount_propagation: Literal["None", "HostToContainer", "Bidirectional"] | None = Field(
        default=None, description="Mount propagation mode."
    )


class ContainerPort(KubeModel):
    container_port: int = Field(ge=1, le=65535, description="Port number.")
    name: str | None = Field(default=None, max_length=15, pattern=DNS_LABEL, description="Port name.")
    protocol: Literal["TCP", "UDP", "SCTP"] | None = Field(default=None, description="Protocol.")


class ContainerOverride(KubeModel):
    """A container of the pod: `engine` and `sidecar` are merged into the generated ones, any other name
    adds a container (then `image` is required)."""

    name: str = Field(
        min_length=1, max_length=63, pattern=DNS_LABEL, description="engine, sidecar, or a new one."
    )
    image: str | None = Field(default=None, min_length=1, max_length=512, description="Container image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Image pull policy."
    )
    command: list[str] | None = Field(default=None, description="Entrypoint (extra containers only).")
    args: list[str] | None = Field(default=None, description="Arguments (extra containers only).")
    working_dir: str | None = Field(default=None, description="Working directory.")
    env: list[EnvVar] | None = Field(
        default=None,
        max_length=256,
        description="Environment, merged by name.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    env_from: list[EnvFromSource] | None = Field(
        default=None, max_length=64, description="Secrets and ConfigMaps exposed as environment."
    )
    resources: ResourceRequirements | None = Field(default=None, description="Resources, merged by name.")
    volume_mounts: list[VolumeMount] | None = Field(
        default=None,
        max_length=128,
        description="Volume mounts, merged by mountPath.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["mountPath"]},
    )
    ports: list[ContainerPort] | None = Field(
        default=None,
        max_length=64,
        description="Ports (extra containers only; the operator owns the engine's and the sidecar's).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["containerPort"]},
    )
    liveness_probe: dict[str, Any] | None = Field(
        default=None,
        description="core/v1 Probe (the sidecar's probes are the operator's).",
        json_schema_extra=_FREE_FORM,
    )
    readiness_probe: dict[str, Any] | None = Field(
        default=None,
        description="core/v1 Probe (the sidecar's probes are the operator's).",
        json_schema_extra=_FREE_FORM,
    )
    startup_probe: dict[str, Any] | None = Field(
        default=None,
        description="core/v1 Probe (the sidecar's probes are the operator's).",
        json_schema_extra=_FREE_FORM,
    )
    security_context: dict[str, Any] | None = Field(
        default=None,
        description="core/v1 SecurityContext, merged over the generated one.",
        json_schema_extra=_FREE_FORM,
    )


class Toleration(KubeModel):
    key: str | None = Field(default=None, max_length=316, description="Taint key; empty with Exists: all.")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal.")
    value: str | None = Field(default=None, max_length=63, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated."
    )


class LocalObjectReference(KubeModel):
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="Object name.")


class PersistentVolumeClaimSource(KubeModel):
    claim_name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="PVC name.")
    read_only: bool | None = Field(default=None, description="Mount read-only.")


class KeyToPath(KubeModel):
    key: str = Field(min_length=1, description="Key of the Secret or ConfigMap.")
    path: str = Field(min_length=1, description="Relative file path.")
    mode: int | None = Field(default=None, ge=0, le=0o777, description="File mode bits.")


class SecretVolumeSource(KubeModel):
    secret_name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="Secret name.")
    items: list[KeyToPath] | None = Field(default=None, description="Keys to project; all when empty.")
    default_mode: int | None = Field(default=None, ge=0, le=0o777, description="File mode bits.")
    optional: bool | None = Field(default=None, description="Whether the Secret may be missing.")


class ConfigMapVolumeSource(KubeModel):
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="ConfigMap name.")
    items: list[KeyToPath] | None = Field(default=None, description="Keys to project; all when empty.")
    default_mode: int | None = Field(default=None, ge=0, le=0o777, description="File mode bits.")
    optional: bool | None = Field(default=None, description="Whether the ConfigMap may be missing.")


class EmptyDirSource(KubeModel):
    medium: Literal["", "Memory"] | None = Field(default=None, description="'' (node disk) or Memory.")
    size_limit: Quantity | None = Field(default=None, description="Size limit.")


class HostPathSource(KubeModel):
    path: str = Field(min_length=1, pattern=r"^/", description="Path on the node.")
    type: (
        Literal[
            "",
            "DirectoryOrCreate",
            "Directory",
            "FileOrCreate",
            "File",
            "Socket",
            "CharDevice",
            "BlockDevice",
        ]
        | None
    ) = Field(default=None, description="Type check of the host path.")


class NFSSource(KubeModel):
    server: str = Field(min_length=1, description="NFS server.")
    path: str = Field(min_length=1, description="Exported path.")
    read_only: bool | None = Field(default=None, description="Mount read-only.")


_VOLUME_SOURCES = [
    "persistentVolumeClaim",
    "secret",
    "configMap",
    "emptyDir",
    "hostPath",
    "nfs",
    "csi",
    "ephemeral",
    "projected",
]
_VOLUME_FIELDS = [
    "persistent_volume_claim",
    "secret",
    "config_map",
    "empty_dir",
    "host_path",
    "nfs",
    "csi",
    "ephemeral",
    "projected",
]


class Volume(KubeModel):
    """A pod volume with exactly one source; a volume of the generated pod with the same name is replaced
    field by field (core's retainKeys)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [_exactly_one(_VOLUME_SOURCES, "is the volume's source")]
        }
    )

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL, description="Volume name.")
    persistent_volume_claim: PersistentVolumeClaimSource | None = Field(
        default=None, description="A PersistentVolumeClaim (e.g. a model cache)."
    )
    secret: SecretVolumeSource | None = Field(default=None, description="A Secret as files.")
    config_map: ConfigMapVolumeSource | None = Field(default=None, description="A ConfigMap as files.")
    empty_dir: EmptyDirSource | None = Field(default=None, description="A scratch directory.")
    host_path: HostPathSource | None = Field(default=None, description="A directory of the node.")
    nfs: NFSSource | None = Field(default=None, description="An NFS export.")
    csi: dict[str, Any] | None = Field(
        default=None, description="core/v1 CSIVolumeSource.", json_schema_extra=_FREE_FORM
    )
    ephemeral: dict[str, Any] | None = Field(
        default=None, description="core/v1 EphemeralVolumeSource.", json_schema_extra=_FREE_FORM
    )
    projected: dict[str, Any] | None = Field(
        default=None, description="core/v1 ProjectedVolumeSource.", json_schema_extra=_FREE_FORM
    )

    @model_validator(mode="after")
    def _check_one(self) -> "Volume":
        if sum(getattr(self, f) is not None for f in _VOLUME_FIELDS) != 1:
            raise ValueError(
                f"volume {self.name}: exactly one of {', '.join(_VOLUME_SOURCES)} is the volume's source"
            )
        return self


class PodTemplateMetadata(KubeModel):
    labels: dict[str, str] | None = Field(default=None, description="Added to the pod's labels.")
    annotations: dict[str, str] | None = Field(default=None, description="Added to the pod's annotations.")


class PodSpecOverride(KubeModel):
    """The PodSpec fields a user may add to the generated pod."""

    containers: list[ContainerOverride] | None = Field(
        default=None,
        max_length=16,
        description="Merged by name into `engine` and `sidecar`; other names add containers.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(c, c.name in ['engine', 'sidecar'] || has(c.image))",
                    "message": "a container other than engine and sidecar needs an image",
                }
            ],
        },
    )
    init_containers: list[ContainerOverride] | None = Field(
        default=None,
        max_length=16,
        description="Init containers (e.g. a model pre-fetch into the cache volume); each needs an image.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "x-kubernetes-validations": [
                {"rule": "self.all(c, has(c.image))", "message": "an init container needs an image"}
            ],
        },
    )
    volumes: list[Volume] | None = Field(
        default=None,
        max_length=64,
        description="Volumes, merged by name.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    tolerations: list[Toleration] | None = Field(default=None, max_length=64, description="Tolerations.")
    node_selector: dict[str, str] | None = Field(default=None, description="Node labels the pod must match.")
    affinity: dict[str, Any] | None = Field(
        default=None,
        description="core/v1 Affinity (nodeAffinity, podAffinity, podAntiAffinity).",
        json_schema_extra=_FREE_FORM,
    )
    topology_spread_constraints: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=16,
        description="core/v1 TopologySpreadConstraints.",
        json_schema_extra={"items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
    )
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None,
        max_length=16,
        description="Secrets for pulling the images.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    service_account_name: str | None = Field(
        default=None, max_length=253, pattern=DNS_SUBDOMAIN, description="The pod's ServiceAccount."
    )
    automount_service_account_token: bool | None = Field(
        default=None,
        description="Mount the ServiceAccount token (off by default: neither container needs it).",
    )
    runtime_class_name: str | None = Field(
        default=None, max_length=253, pattern=DNS_SUBDOMAIN, description="RuntimeClass, e.g. nvidia."
    )
    priority_class_name: str | None = Field(
        default=None, max_length=253, pattern=DNS_SUBDOMAIN, description="PriorityClass of the pods."
    )
    scheduler_name: str | None = Field(default=None, max_length=253, description="Scheduler of the pods.")
    security_context: dict[str, Any] | None = Field(
        default=None,
        description="core/v1 PodSecurityContext, merged over the generated one.",
        json_schema_extra=_FREE_FORM,
    )

    @model_validator(mode="after")
    def _check_containers(self) -> "PodSpecOverride":
        for container in self.containers or []:
            if container.name not in ("engine", "sidecar") and container.image is None:
                raise ValueError(
                    f"container {container.name}: a container other than engine and sidecar needs an image"
                )
        for container in self.init_containers or []:
            if container.image is None:
                raise ValueError(f"init container {container.name}: an init container needs an image")
        return self


class PodTemplateOverride(KubeModel):
    """Merged over the generated pod: maps by key, containers and volumes by name, env by name,
    volumeMounts by mountPath; what the operator owns wins (a status condition lists the conflicts)."""

    metadata: PodTemplateMetadata | None = Field(default=None, description="Pod labels and annotations.")
    spec: PodSpecOverride | None = Field(default=None, description="Pod spec fields.")
