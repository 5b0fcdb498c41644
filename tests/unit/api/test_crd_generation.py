"""The CRDs in crds/ are generated, current, and structural (the API server would accept them)."""

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sloguard.api.crd import crd_documents
from sloguard.crds_command import main_check_dir, render

# Keywords the API server accepts in a structural schema (JSONSchemaProps, as we use it).
ALLOWED_KEYWORDS = {
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
INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]
STRUCTURAL_TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def int_or_string_violations(node: dict[str, Any], path: str) -> list[str]:
    """The one union a structural schema allows: no type, at most anyOf [integer, string]."""
    problems = []
    if "type" in node:
        problems.append(f"{path}: an int-or-string node has no type")
    if node.get("anyOf", INT_OR_STRING) != INT_OR_STRING:
        problems.append(f"{path}: int-or-string anyOf must be {INT_OR_STRING}")
    unknown = set(node) - ALLOWED_KEYWORDS - {"anyOf"}
    return problems + ([f"{path}: unsupported keywords {sorted(unknown)}"] if unknown else [])


def list_map_violations(node: dict[str, Any], path: str) -> list[str]:
    if node.get("x-kubernetes-list-type") != "map":
        return []
    keys = node.get("x-kubernetes-list-map-keys", [])
    required = set(node.get("items", {}).get("required", []))
    if not keys or not set(keys) <= required:
        return [f"{path}: list-map keys {keys} must be required item fields"]
    return []


def structural_violations(node: dict[str, Any], path: str = "") -> list[str]:
    """The rules of apiextensions validation.go that a generator can break."""
    if node.get("x-kubernetes-int-or-string"):
        return int_or_string_violations(node, path)
    problems = []
    unknown = set(node) - ALLOWED_KEYWORDS
    if unknown:
        problems.append(f"{path}: unsupported keywords {sorted(unknown)}")
    if node.get("type") not in STRUCTURAL_TYPES:
        problems.append(f"{path}: missing or bad type {node.get('type')!r}")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: additionalProperties beside properties")
    if node.get("uniqueItems"):
        problems.append(f"{path}: uniqueItems is forbidden")
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in node and not isinstance(node[key], bool):
            problems.append(f"{path}: {key} must be a boolean in OpenAPI v3.0")
    problems += list_map_violations(node, path)
    if node.get("default") is None and "default" in node:
        problems.append(f"{path}: default null")
    for name, child in node.get("properties", {}).items():
        problems += structural_violations(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_violations(node["additionalProperties"], f"{path}[*]")
    if "items" in node:
        problems += structural_violations(node["items"], f"{path}[]")
    return problems


@pytest.mark.parametrize("name", sorted(crd_documents()))
def test_checked_in_crd_matches_the_models(repo_root: Path, name: str) -> None:
    checked_in = (repo_root / "crds" / name).read_text()
    assert checked_in == render(crd_documents()[name]), f"crds/{name} is stale: run `make generate`"


@pytest.mark.parametrize("name", sorted(crd_documents()))
def test_schema_is_structural(name: str) -> None:
    schema = crd_documents()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert structural_violations(schema) == []


def test_walker_catches_the_constructs_the_api_server_rejects() -> None:
    bad = {
        "type": "object",
        "properties": {"a": {"$ref": "#/x"}, "b": {"type": "number", "exclusiveMinimum": 0}},
        "additionalProperties": False,
    }
    problems = structural_violations(bad)
    assert any("additionalProperties beside properties" in p for p in problems)
    assert any("unsupported keywords ['$ref']" in p for p in problems)
    assert any(".a: missing or bad type" in p for p in problems)
    assert any("exclusiveMinimum must be a boolean" in p for p in problems)
    typed = {"type": "string", "x-kubernetes-int-or-string": True}
    assert int_or_string_violations(typed, ".q") == [".q: an int-or-string node has no type"]
    union = {"anyOf": [{"type": "number"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
    assert "anyOf must be" in int_or_string_violations(union, ".q")[0]


def test_quantities_are_int_or_string_with_the_core_pattern() -> None:
    from sloguard.api.quantity import QUANTITY_PATTERN

    schema = crd_documents()["sloguard.dev_inferencepools.yaml"]["spec"]["versions"][0]["schema"]
    requests = schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["engine"]["properties"][
        "resources"
    ]["properties"]["requests"]["additionalProperties"]
    assert requests == {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": True,
    }


@pytest.mark.parametrize("name", sorted(crd_documents()))
def test_crd_object_is_a_valid_apiextensions_v1_document(name: str) -> None:
    kubernetes_validate.validate(crd_documents()[name], "1.30", strict=True)


def test_names_stay_clear_of_the_gateway_api_inference_extension() -> None:
    docs = crd_documents()
    for crd in docs.values():
        assert crd["spec"]["group"] == "sloguard.dev"
        assert "infpool" not in crd["spec"]["names"]["shortNames"]
        assert crd["spec"]["names"]["categories"] == ["sloguard"]
    pool = docs["sloguard.dev_inferencepools.yaml"]["spec"]["versions"][0]
    assert pool["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert docs["sloguard.dev_sloclasses.yaml"]["spec"]["scope"] == "Cluster"


def test_crds_check_command_detects_stale_and_current_files(tmp_path: Path) -> None:
    assert main_check_dir(tmp_path, check=False) == 0
    assert main_check_dir(tmp_path, check=True) == 0
    stale = tmp_path / "sloguard.dev_sloclasses.yaml"
    stale.write_text(stale.read_text().replace("sloc", "slox"))
    assert main_check_dir(tmp_path, check=True) == 1
    assert yaml.safe_load(stale.read_text())["spec"]["names"]["shortNames"] == [
        "slox"
    ]  # --check wrote nothing
