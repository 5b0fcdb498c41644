"""The gRPC front (proto package sloguard.v1): Sidecar.Generate/Estimate and Control.GetState/SetLimits/Drain.

Handlers are registered as generic method handlers with the generated message classes, so this module
is fully typed. A request that fails to decode (garbage protobuf) is refused with INVALID_ARGUMENT rather
than gRPC's default INTERNAL. Domain errors become status codes through sidecar/errors.py only. The
client's deadline bounds the queue wait and the engine call (`ServeRequest.timeout_s`).
"""

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from sloguard.api.errors import RejectionReason
from sloguard.sidecar.errors import (
    REASON_METADATA_KEY,
    RequestFailed,
    RequestRejected,
    grpc_status_of,
    grpc_trailing_metadata,
)
from sloguard.sidecar.lifecycle import Lifecycle, ServeRequest
from sloguard.sidecar.proto import sidecar_pb2 as pb

log = logging.getLogger(__name__)

SIDECAR_SERVICE = "sloguard.v1.Sidecar"
CONTROL_SERVICE = "sloguard.v1.Control"
NO_DEADLINE_S = 1e6  # grpc reports a huge time_remaining when the client set no deadline


def _decoder(message_type: Any) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except DecodeError:
            return None  # the handler answers INVALID_ARGUMENT

    return decode


def _encode(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


def serve_request_of(message: pb.GenerateRequest, timeout_s: float | None) -> ServeRequest:
    """The lifecycle's request for a Generate/Estimate message (upstream: /v1/completions)."""
    which = message.WhichOneof("prompt")
    body: dict[str, Any] = {}
    prompt_text: str | None = None
    if which == "text" and message.text:
        body["prompt"] = prompt_text = message.text
        prompt_tokens = -(-len(message.text.encode()) // 4)
    elif which == "token_ids" and message.token_ids.ids:
        body["prompt"] = list(message.token_ids.ids)
        prompt_tokens = len(message.token_ids.ids)
    else:
        raise RequestRejected(RejectionReason.INVALID_REQUEST, "a prompt (text or token_ids) is required")
    max_tokens = message.max_tokens or 16
    body["max_tokens"] = max_tokens
    if message.model:
        body["model"] = message.model
    sampling = message.sampling
    for name in ("temperature", "top_p", "top_k", "seed", "min_tokens", "repetition_penalty"):
        if sampling.HasField(name):
            body[name] = getattr(sampling, name)
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if sampling.ignore_eos:
        body["ignore_eos"] = True
    targets = message.targets
    for name, value in (
        ("ttft_ms", targets.ttft_ms),
        ("tpot_ms", targets.tpot_ms),
        ("deadline_ms", targets.deadline_ms),
    ):
        if value < 0:
            raise RequestRejected(RejectionReason.INVALID_REQUEST, f"targets.{name} must not be negative")
    return ServeRequest(
        endpoint="completions",
        body=body,
        slo_class=message.slo_class or None,
        request_id=message.request_id or uuid.uuid4().hex,
        ttft_s=targets.ttft_ms / 1000.0 or None,
        tpot_s=targets.tpot_ms / 1000.0 or None,
        deadline_s=targets.deadline_ms / 1000.0 or None,
        prompt_text=prompt_text,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        timeout_s=timeout_s,
    )


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: RequestRejected) -> None:
    await context.abort(grpc_status_of(error.reason), error.message, grpc_trailing_metadata(error))


def _timeout_of(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None or remaining > NO_DEADLINE_S else max(0.0, remaining)


class GrpcFront:
    def __init__(
        self,
        lifecycle: Lifecycle,
        *,
        on_drain: Callable[[float | None], None],
        config_hash: Callable[[], str],
    ) -> None:
        self.lifecycle = lifecycle
        self.on_drain = on_drain
        self.config_hash = config_hash

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        sidecar = grpc.method_handlers_generic_handler(
            SIDECAR_SERVICE,
            {
                "Generate": grpc.unary_stream_rpc_method_handler(
                    self.generate,
                    request_deserializer=_decoder(pb.GenerateRequest),
                    response_serializer=_encode,
                ),
                "Estimate": grpc.unary_unary_rpc_method_handler(
                    self.estimate,
                    request_deserializer=_decoder(pb.GenerateRequest),
                    response_serializer=_encode,
                ),
            },
        )
        control = grpc.method_handlers_generic_handler(
            CONTROL_SERVICE,
            {
                "GetState": grpc.unary_unary_rpc_method_handler(
                    self.get_state,
                    request_deserializer=_decoder(pb.GetStateRequest),
                    response_serializer=_encode,
                ),
                "SetLimits": grpc.unary_unary_rpc_method_handler(
                    self.set_limits,
                    request_deserializer=_decoder(pb.SetLimitsRequest),
                    response_serializer=_encode,
                ),
                "Drain": grpc.unary_unary_rpc_method_handler(
                    self.drain, request_deserializer=_decoder(pb.DrainRequest), response_serializer=_encode
                ),
            },
        )
        return [sidecar, control]

    async def _parse(
        self, message: pb.GenerateRequest | None, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ServeRequest:
        try:
            if message is None:
                raise RequestRejected(
                    RejectionReason.INVALID_REQUEST, "the request is not a valid GenerateRequest"
                )
            return serve_request_of(message, _timeout_of(context))
        except RequestRejected as error:
            self.lifecycle.count_unparsed(error.reason)
            await _abort(context, error)
            raise  # unreachable: abort raises

    async def generate(
        self, message: pb.GenerateRequest | None, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.GenerateResponse]:
        serve = await self._parse(message, context)
        events = self.lifecycle.generate(serve)
        request_id = serve.request_id
        async with contextlib.aclosing(events):
            try:
                async for event in events:
                    chunk = event.chunk
                    if chunk.usage_only:
                        continue
                    yield pb.GenerateResponse(
                        request_id=request_id,
                        text=chunk.text,
                        tokens=chunk.tokens,
                        completion_tokens=chunk.completion_tokens,
                        time_since_arrival_ms=event.since_arrival_s * 1000.0,
                        first=event.first,
                        finish_reason=chunk.finish_reason or "",
                        prompt_tokens=chunk.prompt_tokens or 0,
                    )
            except RequestRejected as error:
                await _abort(context, error)
            except RequestFailed as error:
                await context.abort(error.grpc_status, str(error), ((REASON_METADATA_KEY, error.reason),))
            except TimeoutError:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")

    async def estimate(
        self, message: pb.GenerateRequest | None, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.EstimateResponse:
        try:
            if message is None:
                raise RequestRejected(
                    RejectionReason.INVALID_REQUEST, "the request is not a valid GenerateRequest"
                )
            admission = self.lifecycle.estimate(serve_request_of(message, None))
        except RequestRejected as error:
            return pb.EstimateResponse(
                admitted=False,
                reason=error.reason.value,
                retry_after_ms=(error.effective_retry_after_s or 0.0) * 1000.0,
                explanation=error.message,
            )
        return pb.EstimateResponse(
            admitted=admission.admitted,
            reason=admission.reason.value if admission.reason else "",
            predicted_ttft_ms=(admission.predicted_ttft_s or 0.0) * 1000.0,
            predicted_tpot_ms=(admission.predicted_tpot_s or 0.0) * 1000.0,
            predicted_output_tokens=admission.predicted_output_tokens or 0.0,
            retry_after_ms=(admission.retry_after_s or 0.0) * 1000.0,
            explanation=admission.explanation,
        )

    def state(self) -> pb.GetStateResponse:
        lifecycle = self.lifecycle
        depth = lifecycle.policy.queue_depth_by_class()
        running = lifecycle.in_flight_by_class()
        return pb.GetStateResponse(
            pool=lifecycle.config.pool.name,
            policy=lifecycle.policy_name,
            classes=[
                pb.ClassState(
                    slo_class=c.name, queue_depth=depth.get(c.name, 0), in_flight=running.get(c.name, 0)
                )
                for c in lifecycle.config.classes
            ],
            in_flight_cap=lifecycle.aimd.cap,
            min_in_flight=lifecycle.aimd.settings.min_cap,
            max_in_flight=lifecycle.aimd.settings.max_cap,
            cap_overridden=lifecycle.aimd.pinned,
            engine_healthy=lifecycle.engine_up,
            draining=lifecycle.draining,
            # a policy is only ever served with a predictor and latency model that were built: a build
            # failure refuses the configuration (start-up exits 2, a reload keeps the old policy)
            predictor_healthy=True,
            latency_model_healthy=True,
            predictor=lifecycle.predictor_name,
            config_hash=self.config_hash(),
        )

    async def get_state(
        self, message: pb.GetStateRequest | None, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetStateResponse:
        return self.state()

    async def set_limits(
        self, message: pb.SetLimitsRequest | None, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetStateResponse:
        if message is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not a valid SetLimitsRequest")
            raise AssertionError("unreachable")
        try:
            if min(message.in_flight_cap, message.min_in_flight, message.max_in_flight) < 0:
                raise ValueError("limits must not be negative")
            self.lifecycle.set_limits(
                in_flight_cap=message.in_flight_cap,
                min_in_flight=message.min_in_flight,
                max_in_flight=message.max_in_flight,
                clear_override=message.clear_override,
            )
        except ValueError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return self.state()

    async def drain(
        self, message: pb.DrainRequest | None, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DrainResponse:
        grace_s = message.grace_ms / 1000.0 if message is not None and message.grace_ms > 0 else None
        self.on_drain(grace_s)
        return pb.DrainResponse(in_flight=self.lifecycle.in_flight, queued=self.lifecycle.queued)
