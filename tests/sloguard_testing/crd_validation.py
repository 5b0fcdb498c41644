"""Validate custom resources against our generated CRDs the way the API server does.

Three steps, as in kube-apiserver: the structural OpenAPI schema (types, patterns, bounds; unknown
fields refused, as with `kubectl apply --validate=strict`; repeated keys of list-maps and sets), then
every `x-kubernetes-validations` CEL
rule evaluated with cel-python at the node that carries it. Errors come back as readable strings with
the field path, so tests can assert on the message a user would see.
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
import jsonschema
from celpy.adapter import json_to_cel

from sloguard.api.crd import crd_documents


def _to_jsonschema(node: dict[str, Any]) -> dict[str, Any]:
    """Structural schema -> draft-4 JSON Schema with strict unknown-field handling."""
    out = copy.deepcopy(node)
    for key in (
        "x-kubernetes-validations",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "default",
    ):
        out.pop(key, None)
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if out.pop("nullable", False):
        out["type"] = [out["type"], "null"]
    if "properties" in out:
        out["properties"] = {k: _to_jsonschema(v) for k, v in out["properties"].items()}
        if not preserve:
            out["additionalProperties"] = False
    elif isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _to_jsonschema(out["additionalProperties"])
    if "items" in out:
        out["items"] = _to_jsonschema(out["items"])
    return out


def _cel_errors(schema: dict[str, Any], value: Any, path: str, env: celpy.Environment) -> list[str]:
    errors: list[str] = []
    if value is None:
        return errors
    for rule in schema.get("x-kubernetes-validations", []):
        program = env.program(env.compile(rule["rule"]))
        if not bool(program.evaluate({"self": json_to_cel(value)})):
            errors.append(f"{path}: Invalid value: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                errors += _cel_errors(child, value[name], f"{path}.{name}", env)
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, f"{path}[{index}]", env)
    return errors


def _list_errors(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    """`x-kubernetes-list-type` map and set: the API server refuses repeated keys ("Duplicate value")."""
    errors: list[str] = []
    if isinstance(value, list):
        kind = schema.get("x-kubernetes-list-type")
        keys = schema.get("x-kubernetes-list-map-keys", [])
        if kind in ("map", "set"):
            seen: set[str] = set()
            for index, item in enumerate(value):
                key = repr([item.get(k) for k in keys]) if kind == "map" else repr(item)
                if key in seen:
                    errors.append(f"{path}[{index}]: Duplicate value: {key}")
                seen.add(key)
        for index, item in enumerate(value):
            errors += _list_errors(schema.get("items", {}), item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                errors += _list_errors(child, value[name], f"{path}.{name}")
    return errors


def _crd_for_kind(kind: str) -> dict[str, Any]:
    for crd in crd_documents().values():
        if crd["spec"]["names"]["kind"] == kind:
            return crd
    raise KeyError(f"no CRD for kind {kind}")


def validate_resource(obj: dict[str, Any]) -> list[str]:
    """Return the API server's complaints about `obj` (empty when it would be accepted)."""
    crd = _crd_for_kind(obj.get("kind", ""))
    version = crd["spec"]["versions"][0]
    expected_api_version = f"{crd['spec']['group']}/{version['name']}"
    if obj.get("apiVersion") != expected_api_version:
        return [f"apiVersion: expected {expected_api_version}, got {obj.get('apiVersion')!r}"]
    schema = version["schema"]["openAPIV3Schema"]
    validator = jsonschema.Draft4Validator(_to_jsonschema(schema))
    errors = [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]
    errors += _list_errors(schema, obj, "")
    if errors:
        return errors
    return _cel_errors(schema, obj, "", celpy.Environment())
