"""Merging a pool's `spec.podTemplate` over the generated pod template, and what the operator keeps.

Pure, over plain wire-form dicts (camelCase). `sloguard.operator.core.children` builds the pod template
and calls `merge_pod_template`; `core.plan` carries the conflicts to `core.status`, which writes them as
the `PodTemplateConflict` condition.

Strategic-merge semantics, as `kubectl patch --type strategic` applies them to a PodTemplateSpec:

- maps (labels, annotations, nodeSelector, resources, securityContext, affinity) merge key by key, the
  override winning;
- lists with a merge key merge item by item: containers, initContainers, volumes, imagePullSecrets and
  env by `name`, volumeMounts by `mountPath`, ports by `containerPort`; an item with a new key is
  appended. A volume of the same name keeps only the fields the override names (core's `retainKeys`),
  and an env entry is replaced whole (so `valueFrom` can replace a `value`);
- any other list (tolerations, args, envFrom, topologySpreadConstraints) and every scalar is replaced.

What the operator must own wins, and each refused field is reported: the pod labels it sets (the
Deployment selector and the Service depend on them), the sidecar's ports, probes, command, args and
its config and tmp mounts, the engine's ports, command and args (`spec.engine.args` adds engine flags),
the `sidecar-config` and `sidecar-tmp` volumes, and any container port the pod already uses.
"""

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

LIST_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}
"""Lists merged item by item, and the key that matches items (core/v1's patchMergeKey)."""

RETAIN_KEYS = frozenset({"volumes"})
"""Lists whose matched items keep only the fields the override names (patchStrategy retainKeys)."""

REPLACE_ITEMS = frozenset({"env"})
"""Lists whose matched items are replaced whole (a `valueFrom` must not keep the old `value`)."""

OWNED_VOLUMES = frozenset({"sidecar-config", "sidecar-tmp"})
OWNED_SIDECAR_FIELDS = ("ports", "livenessProbe", "readinessProbe", "startupProbe", "command", "args")
OWNED_ENGINE_FIELDS = ("ports", "command", "args")
_ENGINE_HINT = {"args": "add engine flags with spec.engine.args", "ports": "set spec.engine.port"}


@dataclass(frozen=True)
class TemplateMerge:
    """The merged pod template and the override fields the operator refused, as readable paths."""

    template: dict[str, Any]
    conflicts: list[str] = field(default_factory=list)


def strategic_merge(base: Any, patch: Any) -> Any:
    """`patch` merged over `base` (neither is modified)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            out[key] = _merge_field(key, base.get(key), value)
        return out
    return copy.deepcopy(patch)


def _merge_field(name: str, base: Any, patch: Any) -> Any:
    if name in LIST_MERGE_KEYS and isinstance(base, list) and isinstance(patch, list):
        return _merge_list(name, base, patch)
    return strategic_merge(base, patch)


def _merge_list(name: str, base: list[Any], patch: list[Any]) -> list[Any]:
    key = LIST_MERGE_KEYS[name]
    out = copy.deepcopy(base)
    index = {item.get(key): i for i, item in enumerate(out) if isinstance(item, dict)}
    for item in patch:
        at = index.get(item.get(key)) if isinstance(item, dict) else None
        if at is None:
            out.append(copy.deepcopy(item))
            if isinstance(item, dict):
                index[item.get(key)] = len(out) - 1
        elif name in REPLACE_ITEMS:
            out[at] = copy.deepcopy(item)
        elif name in RETAIN_KEYS:
            out[at] = {k: _merge_field(k, out[at].get(k), v) for k, v in item.items()}
        else:
            out[at] = strategic_merge(out[at], item)
    return out


def _ports_of(containers: Iterable[dict[str, Any]]) -> set[int]:
    return {int(p["containerPort"]) for c in containers for p in c.get("ports", []) or []}


def _strip_fields(
    container: dict[str, Any], owned: tuple[str, ...], where: str, hint: dict[str, str], conflicts: list[str]
) -> None:
    for key in owned:
        if key in container:
            del container[key]
            extra = f"; {hint[key]}" if key in hint else ""
            conflicts.append(f"{where}[{container.get('name')}].{key}: owned by the operator{extra}")


def _strip_mounts(container: dict[str, Any], owned: set[str], where: str, conflicts: list[str]) -> None:
    if "volumeMounts" not in container:
        return
    kept = []
    for mount in container["volumeMounts"] or []:
        if mount.get("mountPath") in owned:
            conflicts.append(
                f"{where}[{container.get('name')}].volumeMounts[{mount['mountPath']}]: owned by the operator"
            )
        else:
            kept.append(mount)
    container["volumeMounts"] = kept


def _strip_ports(container: dict[str, Any], owned: set[int], where: str, conflicts: list[str]) -> None:
    if not container.get("ports"):
        return
    kept = []
    for port in container["ports"]:
        if int(port.get("containerPort", 0)) in owned:
            conflicts.append(
                f"{where}[{container.get('name')}].ports[{port['containerPort']}]: the port is the pool's"
            )
        else:
            kept.append(port)
    container["ports"] = kept


def _strip_container(
    container: dict[str, Any],
    generated: dict[str, Any] | None,
    where: str,
    owned_ports: set[int],
    conflicts: list[str],
) -> dict[str, Any]:
    """The container override without the fields the operator owns; each one dropped is a conflict."""
    out = dict(container)
    name = out.get("name")
    if name == "sidecar" and generated is not None:
        _strip_fields(out, OWNED_SIDECAR_FIELDS, where, {}, conflicts)
        _strip_mounts(out, {m["mountPath"] for m in generated.get("volumeMounts", [])}, where, conflicts)
    elif name == "engine" and generated is not None:
        _strip_fields(out, OWNED_ENGINE_FIELDS, where, _ENGINE_HINT, conflicts)
    else:
        _strip_ports(out, owned_ports, where, conflicts)
    return out


def owned_conflicts(
    generated: dict[str, Any], override: dict[str, Any], *, reserved_ports: Iterable[int] = ()
) -> tuple[dict[str, Any], list[str]]:
    """The override with what the operator owns removed, and a line per removed field.

    `generated` is the operator's pod template; `reserved_ports` are ports the pod uses without
    declaring them (the loopback-only Control port)."""
    conflicts: list[str] = []
    clean = copy.deepcopy(override)
    labels = (clean.get("metadata") or {}).get("labels") or {}
    owned_labels = (generated.get("metadata") or {}).get("labels") or {}
    for key in sorted(labels):
        if key in owned_labels and labels[key] != owned_labels[key]:
            conflicts.append(f"metadata.labels[{key}]: owned by the operator (selector and Service)")
            del labels[key]
    spec = clean.get("spec") or {}
    generated_spec = generated.get("spec") or {}
    by_name = {c["name"]: c for c in generated_spec.get("containers", [])}
    owned_ports = _ports_of(generated_spec.get("containers", [])) | set(reserved_ports)
    for list_name in ("containers", "initContainers"):
        if list_name in spec:
            spec[list_name] = [
                _strip_container(
                    c,
                    by_name.get(c.get("name", "")) if list_name == "containers" else None,
                    f"spec.{list_name}",
                    owned_ports,
                    conflicts,
                )
                for c in spec[list_name]
            ]
    if "volumes" in spec:
        kept = []
        for volume in spec["volumes"]:
            if volume.get("name") in OWNED_VOLUMES:
                conflicts.append(f"spec.volumes[{volume['name']}]: owned by the operator")
            else:
                kept.append(volume)
        spec["volumes"] = kept
    return clean, conflicts


def merge_pod_template(
    generated: dict[str, Any], override: dict[str, Any] | None, *, reserved_ports: Iterable[int] = ()
) -> TemplateMerge:
    """`override` (a pool's `spec.podTemplate` in wire form) merged over `generated`; the operator's own
    fields win and are listed in `conflicts`."""
    if not override:
        return TemplateMerge(copy.deepcopy(generated))
    clean, conflicts = owned_conflicts(generated, override, reserved_ports=reserved_ports)
    return TemplateMerge(strategic_merge(generated, clean), conflicts)
