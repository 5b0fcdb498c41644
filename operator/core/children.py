"""Builders of a pool's children: ConfigMap, Deployment, Service and PodDisruptionBudget, as plain dicts.

Pure: the InferencePool and its SLOClasses in, manifests out. The handlers (`sloguard.operator.reconcile`)
apply them with one field manager. Design choices the manifests encode:

- The sidecar configuration lives in a ConfigMap mounted as a directory (never `subPath`), so kubelet
  swaps the file in place and the sidecar hot-reloads it. There is deliberately no hash of that file on
  the pod template: an SLOClass edit must not restart pods. Everything that does need a restart
  (images, engine flags, ports, resources) is already part of the pod template and rolls it.
- Shutdown order: on pod deletion both containers get SIGTERM. The sidecar drains on SIGTERM (readiness
  goes false, new requests are refused, in-flight streams finish within the drain grace period); its
  preStop only sleeps a few seconds first so that endpoints stop routing to the pod before the drain
  starts. The engine's preStop sleeps for the drain grace period on top, so vLLM outlives the drain.
- Rolling updates never need a spare GPU: pools with GPUs replace one pod at a time in place
  (`maxSurge: 0`, `maxUnavailable: 1`), so a rollout on a full GPU pool does not stall on a Pending pod;
  CPU-only pools surge one pod and never take a ready replica away. `spec.rollout` overrides both.
- `spec.podTemplate` is merged over the generated pod (`core.pod_template`); the operator's own
  ports, probes and config volume win.
- Two Services: the ClusterIP one (kube-proxy balances per connection) and a headless one,
  `<pool>-headless`, whose DNS name lists every ready pod for gRPC client-side balancing.
- The Control gRPC service listens on the pod's loopback only (`sidecar.controlPort`): no Service port.
"""

import json
from typing import Any

from sloguard.api.duration import parse_duration_s
from sloguard.api.inferencepool import InferencePool
from sloguard.api.sidecar_config import CONFIG_FILE_NAME, SidecarConfig
from sloguard.operator.core.names import (
    CONFIG_MOUNT_DIR,
    ENGINE_CONTAINER,
    SIDECAR_CONTAINER,
    common_labels,
    config_map_name,
    headless_service_name,
    selector_labels,
)
from sloguard.operator.core.owner import owner_reference
from sloguard.operator.core.pod_template import TemplateMerge, merge_pod_template

ENDPOINTS_PROPAGATION_S = 5
"""Sidecar preStop sleep: time for endpoint controllers and proxies to stop sending new requests."""

ENGINE_EXIT_MARGIN_S = 10
"""Extra grace after the engine's preStop, for vLLM to shut down after its last request."""

SIDECAR_USER_ID = 65532
PROBE_PERIOD_S = 10
LIVENESS_TIMEOUT_S = 10
"""vLLM's /health can take seconds under a full batch; the 1 s default would restart a busy engine."""
READINESS_TIMEOUT_S = 5

DEFAULT_SIDECAR_IMAGE = "ghcr.io/sloguard/sloguard:0.1.0"  # tag: the package version (a test checks)
"""Used when neither the pool (`spec.sidecar.image`) nor the operator setting names one; the operator
passes its own setting (`OperatorConfig.sidecar_image`, chart value `sidecar.image`)."""

SIDECAR_DEFAULT_REQUESTS: dict[str, int | str] = {"cpu": "500m", "memory": "256Mi"}
"""Sidecar requests when the pool sets none: enough that a busy node does not starve the scheduler."""


def _metadata(pool: InferencePool, name: str) -> dict[str, Any]:
    namespace = pool.metadata.namespace or "default"
    return {
        "name": name,
        "namespace": namespace,
        "labels": common_labels(pool.metadata.name),
        "ownerReferences": [
            owner_reference(kind="InferencePool", name=pool.metadata.name, uid=pool.metadata.uid or "")
        ],
    }


def build_config_map(pool: InferencePool, config: SidecarConfig) -> dict[str, Any]:
    """The ConfigMap holding the sidecar configuration (`sidecar_config_for_pool`) as sorted JSON."""
    body = json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(pool, config_map_name(pool.metadata.name)),
        "data": {CONFIG_FILE_NAME: body},
    }


def desired_replicas(pool: InferencePool) -> int:
    """`spec.replicas` when set (kubectl scale, an HPA or the autoscaler wrote it), else `minReplicas`."""
    spec = pool.spec
    return spec.replicas if spec.replicas is not None else spec.min_replicas


def engine_args(pool: InferencePool) -> list[str]:
    """vLLM's OpenAI server flags: ours first, the user's `engine.args` after (so they can override)."""
    spec = pool.spec
    engine = spec.engine
    # The model is positional (`vllm serve MODEL`; `--model` is deprecated). The image's entrypoint is
    # `vllm serve`, so the model comes first.
    args = [
        spec.model,
        "--port",
        str(engine.port),
        "--served-model-name",
        spec.served_model_name or spec.model,
    ]
    if engine.gpus > 0:
        args += ["--tensor-parallel-size", str(engine.gpus)]
    if engine.max_num_seqs is not None:
        args += ["--max-num-seqs", str(engine.max_num_seqs)]
    if engine.max_model_len is not None:
        args += ["--max-model-len", str(engine.max_model_len)]
    if spec.scheduling.policy.stamps_engine_priority:
        # vLLM ignores the request `priority` unless it runs the priority scheduler.
        args += ["--scheduling-policy", "priority"]
    return args + list(engine.args)


def drain_grace_s(pool: InferencePool) -> int:
    return max(0, round(parse_duration_s(pool.spec.sidecar.drain_grace_period)))


def termination_grace_s(pool: InferencePool) -> int:
    return ENDPOINTS_PROPAGATION_S + drain_grace_s(pool) + ENGINE_EXIT_MARGIN_S


def _engine_resources(pool: InferencePool) -> dict[str, Any]:
    engine = pool.spec.engine
    requests = dict(engine.resources.requests or {})
    limits: dict[str, int | str] = dict(engine.resources.limits or {})
    if engine.gpus > 0:
        # Extended resources are requested through limits; requests default to them.
        limits[engine.gpu_resource_name] = str(engine.gpus)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _resources(requests: dict[str, int | str], limits: dict[str, int | str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = dict(requests)
    if limits:
        out["limits"] = dict(limits)
    return out


def _engine_container(pool: InferencePool) -> dict[str, Any]:
    engine = pool.spec.engine
    health = {"httpGet": {"path": "/health", "port": "engine"}}
    startup_failures = max(3, -(-round(parse_duration_s(engine.startup_time)) // PROBE_PERIOD_S) * 2)
    return {
        "name": ENGINE_CONTAINER,
        "image": engine.image,
        "args": engine_args(pool),
        "env": [e.to_wire() for e in engine.env],
        "ports": [{"name": "engine", "containerPort": engine.port, "protocol": "TCP"}],
        "resources": _engine_resources(pool),
        # Startup allows twice the expected engine start time (model download and load) before liveness.
        "startupProbe": {**health, "periodSeconds": PROBE_PERIOD_S, "failureThreshold": startup_failures},
        "readinessProbe": {
            **health,
            "periodSeconds": 5,
            "failureThreshold": 3,
            "timeoutSeconds": READINESS_TIMEOUT_S,
        },
        "livenessProbe": {
            **health,
            "periodSeconds": PROBE_PERIOD_S,
            "failureThreshold": 6,
            "timeoutSeconds": LIVENESS_TIMEOUT_S,
        },
        "lifecycle": {
            # Stay up while the sidecar drains: it finishes in-flight streams through this engine.
            "preStop": {"sleep": {"seconds": ENDPOINTS_PROPAGATION_S + drain_grace_s(pool)}}
        },
        "securityContext": {
            # The upstream vLLM image runs as root and writes caches under its home directory, so
            # runAsNonRoot and a read-only root filesystem are left to the image owner; nothing is added.
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }


def _sidecar_container(pool: InferencePool, default_image: str) -> dict[str, Any]:
    sidecar = pool.spec.sidecar
    requests = dict(sidecar.resources.requests or SIDECAR_DEFAULT_REQUESTS)
    return {
        "name": SIDECAR_CONTAINER,
        "image": sidecar.image or default_image,
        "args": ["sidecar", "--config", f"{CONFIG_MOUNT_DIR}/{CONFIG_FILE_NAME}"],
        "ports": [
            {"name": "grpc", "containerPort": sidecar.grpc_port, "protocol": "TCP"},
            {"name": "http", "containerPort": sidecar.http_port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": sidecar.metrics_port, "protocol": "TCP"},
        ],
        "resources": _resources(requests, dict(sidecar.resources.limits or {})),
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "periodSeconds": PROBE_PERIOD_S,
            "failureThreshold": 3,
            "timeoutSeconds": READINESS_TIMEOUT_S,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "metrics"},
            "periodSeconds": 2,
            "failureThreshold": 2,
            "timeoutSeconds": 2,
        },
        "lifecycle": {
            # Then SIGTERM: the sidecar drains on SIGTERM (no exec hook, no shell in the path).
            "preStop": {"sleep": {"seconds": ENDPOINTS_PROPAGATION_S}}
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SIDECAR_USER_ID,
            "runAsGroup": SIDECAR_USER_ID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "sidecar-config", "mountPath": CONFIG_MOUNT_DIR, "readOnly": True},
            {"name": "sidecar-tmp", "mountPath": "/tmp"},
        ],
    }


def rollout_strategy(pool: InferencePool) -> dict[str, Any]:
    """RollingUpdate bounds: `spec.rollout` where set, else the defaults of the module docstring."""
    gpu_pool = pool.spec.engine.gpus > 0
    surge: int | str = 0 if gpu_pool else 1
    unavailable: int | str = 1 if gpu_pool else 0
    rollout = pool.spec.rollout
    if rollout is not None:
        surge = rollout.max_surge if rollout.max_surge is not None else surge
        unavailable = rollout.max_unavailable if rollout.max_unavailable is not None else unavailable
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}


def generated_pod_template(pool: InferencePool, sidecar_image: str = DEFAULT_SIDECAR_IMAGE) -> dict[str, Any]:
    """The pod template the operator writes before the pool's `spec.podTemplate` is merged over it."""
    name = pool.metadata.name
    sidecar = pool.spec.sidecar
    return {
        "metadata": {
            "labels": common_labels(name),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(sidecar.metrics_port),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": {
            "automountServiceAccountToken": False,  # neither container talks to the API server
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": termination_grace_s(pool),
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [_engine_container(pool), _sidecar_container(pool, sidecar_image)],
            "volumes": [
                {"name": "sidecar-config", "configMap": {"name": config_map_name(name)}},
                {"name": "sidecar-tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                {"name": "dshm", "emptyDir": {"medium": "Memory"}},
            ],
        },
    }


def _string_quantities(template: dict[str, Any]) -> dict[str, Any]:
    """Integer quantities as strings (`cpu: 8` -> "8"), the form the API server stores and reads back, so
    the drift check does not see a difference on every resync."""
    spec = template.get("spec", {})
    for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
        for bound in ("requests", "limits"):
            values = (container.get("resources") or {}).get(bound)
            if values:
                container["resources"][bound] = {k: str(v) for k, v in values.items()}
    for volume in spec.get("volumes", []):
        empty_dir = volume.get("emptyDir")
        if empty_dir and isinstance(empty_dir.get("sizeLimit"), int):
            empty_dir["sizeLimit"] = str(empty_dir["sizeLimit"])
    return template


def pod_template(pool: InferencePool, sidecar_image: str = DEFAULT_SIDECAR_IMAGE) -> TemplateMerge:
    """The pod template with `spec.podTemplate` merged in, and the override fields the operator refused."""
    override = pool.spec.pod_template.to_wire() if pool.spec.pod_template is not None else None
    merged = merge_pod_template(
        generated_pod_template(pool, sidecar_image),
        override,
        reserved_ports=[pool.spec.sidecar.control_port],
    )
    return TemplateMerge(_string_quantities(merged.template), merged.conflicts)


def build_deployment(pool: InferencePool, sidecar_image: str = DEFAULT_SIDECAR_IMAGE) -> dict[str, Any]:
    name = pool.metadata.name
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(pool, name),
        "spec": {
            "replicas": desired_replicas(pool),
            "selector": {"matchLabels": selector_labels(name)},
            "strategy": rollout_strategy(pool),
            "template": pod_template(pool, sidecar_image).template,
        },
    }


def _client_ports(pool: InferencePool) -> list[dict[str, Any]]:
    """The sidecar's client-facing ports (grpc, http), as both Services expose them."""
    sidecar = pool.spec.sidecar
    return [
        {
            "name": name,
            "port": port,
            "targetPort": name,
            "protocol": "TCP",
            "appProtocol": name,
        }
        for name, port in (("grpc", sidecar.grpc_port), ("http", sidecar.http_port))
    ]


def build_service(pool: InferencePool) -> dict[str, Any]:
    """ClusterIP Service: clients use grpc or http (through the sidecar); metrics ports for scraping."""
    sidecar = pool.spec.sidecar
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(pool, pool.metadata.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(pool.metadata.name),
            "ports": [
                *_client_ports(pool),
                {"name": "metrics", "port": sidecar.metrics_port, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def build_headless_service(pool: InferencePool) -> dict[str, Any]:
    """Headless Service `<pool>-headless`: its DNS name resolves to every ready pod, so a gRPC client with
    the `round_robin` policy (`dns:///<pool>-headless.<ns>.svc:50051`) balances per request, not per
    connection as it would through the ClusterIP."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(pool, headless_service_name(pool.metadata.name)),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(pool.metadata.name),
            # Only ready pods are listed: publishNotReadyAddresses stays at its default, false (declaring
            # false would never match: the API server omits false booleans, so every resync re-applied).
            "ports": _client_ports(pool),
        },
    }


def build_pod_disruption_budget(pool: InferencePool) -> dict[str, Any]:
    """At most one pod of the pool evicted at a time (a single-replica pool can still be drained)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(pool, pool.metadata.name),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(pool.metadata.name)},
        },
    }


def build_children(
    pool: InferencePool, config: SidecarConfig, sidecar_image: str = DEFAULT_SIDECAR_IMAGE
) -> list[dict[str, Any]]:
    """Every child in apply order: the ConfigMap first, so new pods find their configuration."""
    return [
        build_config_map(pool, config),
        build_deployment(pool, sidecar_image),
        build_service(pool),
        build_headless_service(pool),
        build_pod_disruption_budget(pool),
    ]
