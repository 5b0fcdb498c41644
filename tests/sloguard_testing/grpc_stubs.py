"""The generated gRPC client stubs (sloguard.v1, health, reflection) for aio channels, as `Any`.

The generated `_pb2_grpc` modules carry no annotations and the typeshed stubs type them for synchronous
channels; the tests use them on `grpc.aio` channels exactly as an external client would.
"""

from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2_grpc

from sloguard.sidecar.proto import sidecar_pb2_grpc


def sidecar(channel: grpc.aio.Channel) -> Any:
    return sidecar_pb2_grpc.SidecarStub(channel)  # type: ignore[no-untyped-call]


def control(channel: grpc.aio.Channel) -> Any:
    return sidecar_pb2_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]


def health(channel: grpc.aio.Channel) -> Any:
    stub: Any = health_pb2_grpc.HealthStub
    return stub(channel)


def reflection(channel: grpc.aio.Channel) -> Any:
    stub: Any = reflection_pb2_grpc.ServerReflectionStub
    return stub(channel)
