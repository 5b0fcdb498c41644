"""Generates the checked-in Python stubs of the gRPC contract api/sidecar.proto (run by `make generate`).

The proto lives in api/ with the rest of the contract (DESIGN.md); the stubs live in sidecar/proto/,
the only package that serves or calls it. The proto is compiled from a temporary tree laid out as the
installed stubs' package (`sloguard/sidecar/proto/sidecar.proto`), so the generated `_pb2_grpc`
module imports `sloguard.sidecar.proto.sidecar_pb2` rather than a top-level `sidecar_pb2`. Needs
grpcio-tools (lint/test dependency group), imported lazily.
"""

import importlib.resources
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent / "proto"
PROTO_NAME = "sidecar.proto"
PROTO_SOURCE = Path(importlib.resources.files("sloguard.api") / PROTO_NAME)  # type: ignore[arg-type]
GENERATED = ("sidecar_pb2.py", "sidecar_pb2.pyi", "sidecar_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Compile the proto and write the generated files into `out_dir`; returns their paths."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # noqa: PLC0415 (lint-group dependency)

    with tempfile.TemporaryDirectory() as tmp:
        package_dir = Path(tmp) / "sloguard" / "sidecar" / "proto"
        package_dir.mkdir(parents=True)
        shutil.copy(PROTO_SOURCE, package_dir / PROTO_NAME)
        well_known = str(importlib.resources.files("grpc_tools") / "_proto")
        args = [
            "grpc_tools.protoc",
            f"-I{tmp}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"sloguard/sidecar/proto/{PROTO_NAME}",
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {PROTO_SOURCE}")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in GENERATED:
            target = out_dir / name
            shutil.copy(package_dir / name, target)
            written.append(target)
        return written


def main() -> int:
    for path in generate(PROTO_DIR):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
