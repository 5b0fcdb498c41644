"""CustomResourceDefinitions generated from the pydantic models: one source of truth for the schema.

`crd_documents()` returns the two CRDs as plain dicts; `sloguard crds` writes them to `crds/` and
`sloguard crds --check` compares. Pydantic's JSON Schema is not a structural schema, so `to_structural`
rewrites it the way the API server requires: `$ref` inlined, `anyOf [X, null]` turned into a nullable X,
`additionalProperties: false` dropped beside `properties`, `exclusiveMinimum` in OpenAPI v3.0 form,
`const` as a one-value enum, `title` and other unsupported keywords removed, a `type` on every node.
"""

from typing import Any

from pydantic import BaseModel

from sloguard.api.inferencepool import InferencePoolSpec, InferencePoolStatus
from sloguard.api.sloclass import SLOClassSpec, SLOClassStatus

GROUP = "sloguard.dev"
VERSION = "v1alpha1"

# Keywords of Kubernetes' JSONSchemaProps that we emit; anything else from pydantic is dropped.
_KEPT = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "enum",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "additionalProperties",
    "nullable",
    "default",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
}


class SchemaError(ValueError):
    """The model produced a schema construct that cannot be expressed structurally."""


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return _resolve(merged, defs)
        return {k: _resolve(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def _unwrap_nullable(node: dict[str, Any]) -> dict[str, Any]:
    variants = node.get("anyOf")
    if variants is None:
        return node
    non_null = [v for v in variants if v.get("type") != "null"]
    if len(non_null) != 1:
        raise SchemaError(f"union types are not structural: {variants}")
    outer = {k: v for k, v in node.items() if k != "anyOf"}
    merged = {**non_null[0], **outer}
    if len(non_null) < len(variants):
        merged["nullable"] = True
        if merged.get("default", 0) is None:
            del merged["default"]
    return merged


def _int_or_string(node: dict[str, Any]) -> dict[str, Any]:
    """An int-or-string node (quantities, percentages), as controller-gen writes it: no `type`, the
    `anyOf` of integer and string that structural schemas allow, the pattern for the string form."""
    out = {k: v for k, v in node.items() if k in _KEPT}
    out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    out.pop("type", None)
    out.pop("nullable", None)
    if out.get("default", 0) is None:
        del out["default"]
    return _ordered(out)


def to_structural(node: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Rewrite one (already $ref-resolved) pydantic schema node into a structural schema node."""
    if node.get("x-kubernetes-int-or-string"):
        return _int_or_string(node)
    variants = node.get("anyOf") or []
    non_null = [v for v in variants if v.get("type") != "null"]
    if len(non_null) == 1 and non_null[0].get("x-kubernetes-int-or-string"):
        return _int_or_string({**non_null[0], **{k: v for k, v in node.items() if k != "anyOf"}})
    node = _unwrap_nullable(dict(node))
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if isinstance(node.get("exclusiveMinimum"), int | float) and not isinstance(
        node["exclusiveMinimum"], bool
    ):
        node["minimum"] = node["exclusiveMinimum"]
        node["exclusiveMinimum"] = True
    if isinstance(node.get("exclusiveMaximum"), int | float) and not isinstance(
        node["exclusiveMaximum"], bool
    ):
        node["maximum"] = node["exclusiveMaximum"]
        node["exclusiveMaximum"] = True
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    out = {k: v for k, v in node.items() if k in _KEPT}
    if node.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("additionalProperties", None)
        out["type"] = "object"
        out.pop("default", None)
        return out
    if "properties" in out:
        out.pop("additionalProperties", None)
        out["properties"] = {
            name: to_structural(child, f"{path}.{name}") for name, child in out["properties"].items()
        }
        out["type"] = "object"
    elif isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = to_structural(out["additionalProperties"], f"{path}[*]")
        out["type"] = "object"
    elif out.get("additionalProperties") is False:
        out.pop("additionalProperties")
        out["type"] = "object"
    if "items" in out:
        out["items"] = to_structural(out["items"], f"{path}[]")
    if "type" not in out:
        raise SchemaError(f"schema node {path or '<root>'} has no type: {node}")
    return _ordered(out)


_FIRST = ("type", "anyOf", "description")
_LAST = ("properties", "required", "items", "additionalProperties", "x-kubernetes-validations")


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """Stable, readable key order: type and description first, nested schemas last."""
    middle = sorted(k for k in node if k not in _FIRST and k not in _LAST)
    return {k: node[k] for k in (*_FIRST, *middle, *_LAST) if k in node}


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural schema of one model, camelCase property names."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    resolved = _resolve(raw, raw.get("$defs", {}))
    return to_structural(resolved)


def _root_schema(spec: type[BaseModel], status: type[BaseModel], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": model_schema(spec),
            "status": model_schema(status),
        },
    }


def _crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    scope: str,
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
    subresources: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "sloguard"},
        },
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["sloguard"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def _condition_column(name: str, type_: str) -> dict[str, Any]:
    return {"name": name, "type": "string", "jsonPath": f'.status.conditions[?(@.type=="{type_}")].status'}


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def sloclass_crd() -> dict[str, Any]:
    return _crd(
        kind="SLOClass",
        plural="sloclasses",
        short_names=["sloc"],
        scope="Cluster",
        schema=_root_schema(
            SLOClassSpec, SLOClassStatus, "A latency objective (TTFT, TPOT, deadline) for LLM requests."
        ),
        columns=[
            {"name": "TTFT", "type": "string", "jsonPath": ".spec.ttft"},
            {"name": "TPOT", "type": "string", "jsonPath": ".spec.tpot"},
            {"name": "Deadline", "type": "string", "jsonPath": ".spec.deadline"},
            {"name": "Priority", "type": "integer", "jsonPath": ".spec.priority"},
            {"name": "Default", "type": "boolean", "jsonPath": ".spec.default"},
            _condition_column("Accepted", "Accepted"),
            _AGE,
        ],
        subresources={"status": {}},
    )


def inferencepool_crd() -> dict[str, Any]:
    return _crd(
        kind="InferencePool",
        plural="inferencepools",
        short_names=["sgpool", "sgp"],
        scope="Namespaced",
        schema=_root_schema(
            InferencePoolSpec,
            InferencePoolStatus,
            "A model served by vLLM replicas under SLOGuard's SLO classes.",
        ),
        columns=[
            {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
            {"name": "Policy", "type": "string", "jsonPath": ".spec.scheduling.policy"},
            {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
            {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
            _condition_column("Status", "Ready"),
            _condition_column("SLOAtRisk", "SLOAtRisk"),
            _AGE,
        ],
        subresources={
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector",
            },
        },
    )


def crd_documents() -> dict[str, dict[str, Any]]:
    """File name in crds/ → CRD document."""
    return {
        f"{GROUP}_sloclasses.yaml": sloclass_crd(),
        f"{GROUP}_inferencepools.yaml": inferencepool_crd(),
    }
