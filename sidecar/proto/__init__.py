"""The sidecar's versioned gRPC API (proto package `sloguard.v1`) and its generated Python stubs.

`api/sidecar.proto` (the contract, `sloguard.api`) is the source; `sidecar_pb2*.py(i)` are generated
by `sloguard.sidecar.proto_codegen` and checked in (tests/unit/sidecar/test_proto_stubs.py fails when
they are stale).
"""
