"""The checked-in gRPC stubs are what the proto compiles to now."""

from pathlib import Path

from sloguard.sidecar.proto_codegen import GENERATED, PROTO_DIR, generate


def test_checked_in_stubs_are_current(tmp_path: Path) -> None:
    generate(tmp_path)
    stale = [name for name in GENERATED if (tmp_path / name).read_bytes() != (PROTO_DIR / name).read_bytes()]
    assert stale == [], f"regenerate with `make generate` (python -m sloguard.sidecar.proto_codegen): {stale}"


def test_the_api_is_versioned_sloguard_v1() -> None:
    from sloguard.sidecar.proto import sidecar_pb2

    assert sidecar_pb2.DESCRIPTOR.package == "sloguard.v1"
    assert set(sidecar_pb2.DESCRIPTOR.services_by_name) == {"Sidecar", "Control"}
