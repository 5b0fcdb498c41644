"""Layering, as DESIGN.md's table says: who may import whom, and which modules must stay pure.

An AST scan of every module (the equivalent of import-linter contracts, without its import-hook
limitations for our mapped folders). Pure cores additionally import no I/O frameworks and never read
the clock: time is an argument.
"""

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# folder -> (sloguard subpackages it may import)
ALLOWED_INTERNAL = {
    "api": {"sloguard.api"},
    "predictor": {"sloguard.predictor"},
    "sidecar": {"sloguard.api", "sloguard.sidecar", "sloguard.predictor"},
    "operator": {"sloguard.api", "sloguard.operator", "sloguard.sidecar.core"},
    "sim": {
        "sloguard.api",
        "sloguard.sim",
        "sloguard.sidecar.core",
        "sloguard.operator.core",
        "sloguard.predictor",
    },
}
API_THIRD_PARTY = {"pydantic", "pydantic_core"}

# The output-length predictor: a serving side (predictor/, pure, numpy only) that the runtime imports through
# the package itself (`from sloguard.predictor import X`), and an offline side (predictor/training/: data,
# lightgbm, the clock for latency figures) that only the CLI, the benchmarks and the tests may import.
PREDICTOR_TRAINING = "predictor/training"
PREDICTOR_SURFACE = "sloguard.predictor"
PREDICTOR_THIRD_PARTY = {"numpy"}
RUNTIME_FOLDERS = ["api", "sidecar", "operator", "sim"]

PURE_PACKAGES = ["sidecar/core", "operator/core", "sim/engine", "api", "predictor"]
# sub-folders of a pure package that are not part of it
NOT_PURE = {PREDICTOR_TRAINING}
FORBIDDEN_IN_PURE = {
    "grpc",
    "grpc_health",
    "grpc_reflection",
    "aiohttp",
    "httpx",
    "requests",
    "kopf",
    "kubernetes",
    "kubernetes_asyncio",
    "prometheus_client",
    "prometheus_api_client",
    "asyncio",
    "socket",
    "time",
    "threading",
    "subprocess",
}
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter", "time_ns", "monotonic_ns"}


def imports_of(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return found


def modules_in(folder: str) -> list[Path]:
    return sorted(p for p in (REPO_ROOT / folder).rglob("*.py") if "_pb2" not in p.name)


def pure_modules_in(folder: str) -> list[Path]:
    excluded = [REPO_ROOT / sub for sub in NOT_PURE if sub.startswith(folder + "/")]
    return [p for p in modules_in(folder) if not any(p.is_relative_to(sub) for sub in excluded)]


def allowed(name: str, prefixes: set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("folder", sorted(ALLOWED_INTERNAL))
def test_sloguard_imports_follow_the_design_table(folder: str) -> None:
    violations = []
    for path in modules_in(folder):
        for name, line in imports_of(path):
            if name.split(".")[0] != "sloguard" or name in {"sloguard"}:
                continue
            # `from sloguard.api import X` also yields "sloguard.api.X": judge the module part.
            if not allowed(name, ALLOWED_INTERNAL[folder]) and not allowed(
                name.rsplit(".", 1)[0], ALLOWED_INTERNAL[folder]
            ):
                violations.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {name}")
    assert violations == []


def test_api_imports_only_pydantic_and_the_standard_library() -> None:
    import sys

    violations = []
    for path in modules_in("api"):
        for name, line in imports_of(path):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in API_THIRD_PARTY or top == "sloguard":
                continue
            violations.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {name}")
    assert violations == []


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_pure_cores_do_no_io_and_never_read_the_clock(package: str) -> None:
    violations = []
    for path in pure_modules_in(package):
        for name, line in imports_of(path):
            if name.split(".")[0] in FORBIDDEN_IN_PURE:
                violations.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {name}")
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in CLOCK_CALLS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in {"time", "datetime", "date", "_time"}
            ):
                violations.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} reads the clock")
    assert violations == []


def test_the_predictor_serves_with_numpy_alone_and_never_imports_its_training() -> None:
    import sys

    violations = []
    for path in pure_modules_in("predictor"):
        for name, line in imports_of(path):
            top = name.split(".")[0]
            if name.startswith(PREDICTOR_SURFACE + ".training"):
                violations.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {name}")
            elif (
                top in sys.stdlib_module_names
                or top in PREDICTOR_THIRD_PARTY
                or allowed(name, {PREDICTOR_SURFACE})
            ):
                continue
            else:
                violations.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {name}")
    assert violations == []
    assert pure_modules_in("predictor"), "the scan must see the serving modules"
    assert len(pure_modules_in("predictor")) < len(modules_in("predictor")), "training must be excluded"


@pytest.mark.parametrize("folder", RUNTIME_FOLDERS)
def test_the_runtime_imports_the_predictor_only_through_its_serving_surface(folder: str) -> None:
    """`from sloguard.predictor import X` only: no submodule, and never the training side."""
    violations = []
    for path in modules_in(folder):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith(PREDICTOR_SURFACE + ".") or (
                    isinstance(node, ast.Import) and name == PREDICTOR_SURFACE
                ):
                    violations.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} imports {name}")
    assert violations == []


def test_the_predictor_surface_exports_what_the_runtime_imports() -> None:
    import sloguard.predictor

    imported = set()
    for folder in RUNTIME_FOLDERS:
        for path in modules_in(folder):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module == PREDICTOR_SURFACE:
                    imported |= {alias.name for alias in node.names}
    assert imported, "the runtime asks the predictor for its lengths"
    assert imported <= set(sloguard.predictor.__all__)


def test_the_scan_sees_violations() -> None:
    sample = REPO_ROOT / ".build" / "layering_sample.py"
    sample.parent.mkdir(exist_ok=True)
    sample.write_text("import grpc\nfrom sloguard.operator.core import x\n")
    try:
        assert [n for n, _ in imports_of(sample)] == [
            "grpc",
            "sloguard.operator.core",
            "sloguard.operator.core.x",
        ]
    finally:
        sample.unlink()
