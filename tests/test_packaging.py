"""The distribution ships every package, and the namespace mapping never exposes a bare `operator`."""

import importlib
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MAPPED = {
    "sloguard": "sloguard",
    "sloguard.api": "api",
    "sloguard.sidecar": "sidecar",
    "sloguard.operator": "operator",
    "sloguard.sim": "sim",
    "sloguard.bench": "bench",
    "sloguard.predictor": "predictor",
}


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == MAPPED
    expected = set()
    for package, folder in MAPPED.items():
        for init in (REPO_ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO_ROOT / folder)
            expected.add(".".join([package, *relative.parts]))
    assert set(config["packages"]) == expected, "add new subpackages to [tool.setuptools] packages"


def test_operator_subpackage_does_not_shadow_the_standard_library() -> None:
    import operator

    assert hasattr(operator, "itemgetter")
    assert importlib.import_module("sloguard.operator").__name__ == "sloguard.operator"
