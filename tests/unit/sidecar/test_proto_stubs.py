"""The checked-in gRPC stubs are what the proto compiles to now."""

import re
from pathlib import Path

import pytest

from sloguard.sidecar.proto_codegen import GENERATED, PROTO_DIR, generate

# What the generator stamps about itself rather than about the contract: the grpcio-tools and protobuf
# releases that ran. A fresh machine installs whatever release is newest (CI met grpcio-tools 1.85.4
# against the stubs' 1.85.1), and an older stamp is the compatible one (the stubs require a runtime at
# least that new).
_GENERATOR_STAMPS = (
    re.compile(r"^GRPC_GENERATED_VERSION = '[^']*'$", re.M),
    re.compile(r"^# Protobuf Python Version: .*$", re.M),
    re.compile(r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*\d+,\s*\d+,\s*\d+,"),
)


_VALIDATE = (
    "ValidateProtobufRuntimeVersion(\n    _runtime_version.Domain.PUBLIC,\n    {},\n    {},\n    {},\n    '',"
)


def contract(text: str) -> str:
    """The generated source without the generator's version stamps."""
    for stamp in _GENERATOR_STAMPS:
        text = stamp.sub("<generator version>", text)
    return text


def test_checked_in_stubs_are_current(tmp_path: Path) -> None:
    generate(tmp_path)
    stale = [
        name
        for name in GENERATED
        if contract((tmp_path / name).read_text()) != contract((PROTO_DIR / name).read_text())
    ]
    assert stale == [], f"regenerate with `make generate` (python -m sloguard.sidecar.proto_codegen): {stale}"


@pytest.mark.parametrize(
    ("generated", "checked_in", "same"),
    [
        ("GRPC_GENERATED_VERSION = '1.85.4'\nx = 1\n", "GRPC_GENERATED_VERSION = '1.85.1'\nx = 1\n", True),
        ("# Protobuf Python Version: 7.35.2\nx = 1\n", "# Protobuf Python Version: 7.35.1\nx = 1\n", True),
        (_VALIDATE.format(7, 36, 0), _VALIDATE.format(7, 35, 1), True),
        ("GRPC_GENERATED_VERSION = '1.85.1'\nx = 2\n", "GRPC_GENERATED_VERSION = '1.85.1'\nx = 1\n", False),
        ("rpc Serve(A) returns (B)", "rpc Serve(A) returns (C)", False),
    ],
)
def test_only_the_generator_stamps_may_differ(generated: str, checked_in: str, same: bool) -> None:
    assert (contract(generated) == contract(checked_in)) is same


def test_the_api_is_versioned_sloguard_v1() -> None:
    from sloguard.sidecar.proto import sidecar_pb2

    assert sidecar_pb2.DESCRIPTOR.package == "sloguard.v1"
    assert set(sidecar_pb2.DESCRIPTOR.services_by_name) == {"Sidecar", "Control"}
