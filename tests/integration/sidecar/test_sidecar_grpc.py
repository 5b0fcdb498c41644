"""The gRPC front (sloguard.v1) over real sockets: streaming, rejection codes, cancellation, deadlines."""

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from sloguard_testing import grpc_stubs as stubs
from sloguard_testing.fake_vllm import FakeVllm
from sloguard_testing.sidecar_harness import Harness, running_sidecar, wait_until

from sloguard.sidecar.proto import sidecar_pb2 as pb


def _request(**fields: object) -> pb.GenerateRequest:
    base: dict[str, object] = {"text": "the quick brown fox", "max_tokens": 5}
    base.update(fields)
    return pb.GenerateRequest(**base)  # type: ignore[arg-type]


async def _collect(
    h: Harness, request: pb.GenerateRequest, deadline_s: float | None = None
) -> list[pb.GenerateResponse]:
    async with grpc.aio.insecure_channel(h.grpc_target) as channel:
        call = stubs.sidecar(channel).Generate(request, timeout=deadline_s)
        return [message async for message in call]


def _metadata(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return {k: str(v) for k, v in (error.trailing_metadata() or ())}


@pytest.mark.parametrize("tokens_per_chunk", [1, 3])
async def test_generate_streams_tokens_with_timing_counted_from_usage(
    tmp_path: Path, tokens_per_chunk: int
) -> None:
    fake = FakeVllm(tokens_per_chunk=tokens_per_chunk)
    async with running_sidecar(tmp_path, fake) as h:
        messages = await _collect(h, _request(request_id="r1", max_tokens=7, slo_class="batch"))
        assert sum(m.tokens for m in messages) == 7  # coalesced chunks still count every token
        assert [m.first for m in messages].count(True) == 1 and messages[0].first
        assert [m.completion_tokens for m in messages] == sorted(m.completion_tokens for m in messages)
        assert messages[-1].finish_reason == "length"
        assert "".join(m.text for m in messages) == "".join(f" t{i}" for i in range(7))
        times = [m.time_since_arrival_ms for m in messages]
        assert times == sorted(times) and times[0] > 0
        assert all(m.request_id == "r1" for m in messages)
        assert fake.headers[-1]["x-request-id"] == "r1"
        assert h.sample("sloguard_requests_total", slo_class="batch", outcome="completed", reason="") == 1
        assert h.sample("sloguard_ttft_seconds_count", slo_class="batch") == 1


REJECTIONS = [
    ("unknown class", {"slo_class": "gold"}, grpc.StatusCode.INVALID_ARGUMENT, "unknown_class"),
    ("negative max_tokens", {"max_tokens": -3}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
    ("huge max_tokens", {"max_tokens": 2**30}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
    ("no prompt", {"text": ""}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
    (
        "oversized prompt",
        {"token_ids": pb.TokenIds(ids=list(range(2000)))},
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_request",
    ),
    (
        "negative target",
        {"targets": pb.SLOTargets(ttft_ms=-1)},
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_request",
    ),
]


@pytest.mark.parametrize(("case", "fields", "code", "reason"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
async def test_bad_requests_map_to_invalid_argument_with_a_reason(
    tmp_path: Path, case: str, fields: dict[str, object], code: grpc.StatusCode, reason: str
) -> None:
    async with running_sidecar(tmp_path, limits={"max_prompt_tokens": 1000}) as h:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _collect(h, _request(**fields))
        assert caught.value.code() == code, case
        assert _metadata(caught.value)["sloguard-reason"] == reason
        assert "sloguard-retry-after-ms" not in _metadata(caught.value)
        assert h.total_ended() == 1 and h.engine.requests == []


async def test_garbage_protobuf_is_invalid_argument(tmp_path: Path) -> None:
    async with running_sidecar(tmp_path) as h, grpc.aio.insecure_channel(h.grpc_target) as channel:
        raw: Any = channel.unary_stream(
            "/sloguard.v1.Sidecar/Generate", request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in raw(b"\xff\xff\xff\xff\xff"):
                pass
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert h.outcomes() == {("_unresolved", "rejected", "invalid_request"): 1}


async def test_queue_full_is_resource_exhausted_with_a_retry_hint(tmp_path: Path) -> None:
    fake = FakeVllm()
    fake.release.clear()
    limits = {"max_queue_depth": 0, "min_in_flight": 1, "max_in_flight": 1}
    async with running_sidecar(tmp_path, fake, limits=limits) as h:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _collect(h, _request())
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _metadata(caught.value) == {"sloguard-reason": "queue_full", "sloguard-retry-after-ms": "1000"}
        async with grpc.aio.insecure_channel(h.grpc_target) as channel:
            estimate = await stubs.sidecar(channel).Estimate(_request())
        assert not estimate.admitted and estimate.reason == "queue_full" and estimate.retry_after_ms == 1000


async def test_cancelling_the_call_aborts_upstream_and_counts_cancelled(tmp_path: Path) -> None:
    fake = FakeVllm(token_interval_s=0.01)
    async with running_sidecar(tmp_path, fake) as h, grpc.aio.insecure_channel(h.grpc_target) as channel:
        call = stubs.sidecar(channel).Generate(_request(max_tokens=5000))
        await call.read()
        call.cancel()
        await wait_until(lambda: fake.aborted == 1, what="upstream abort")
        await wait_until(lambda: h.total_ended() == 1, what="outcome")
        assert h.outcomes() == {("interactive", "cancelled", "client"): 1}


async def test_client_deadline_bounds_the_engine_call(tmp_path: Path) -> None:
    fake = FakeVllm()
    fake.release.clear()  # the engine never produces a token
    async with running_sidecar(tmp_path, fake) as h:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _collect(h, _request(), deadline_s=0.3)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await wait_until(lambda: fake.aborted == 1, what="upstream abort")
        await wait_until(lambda: h.total_ended() == 1, what="outcome")
        ((_, outcome, _),) = h.outcomes()
        assert outcome == "cancelled"


async def test_engine_killed_mid_stream_fails_clearly_and_later_requests_are_unavailable(
    tmp_path: Path,
) -> None:
    fake = FakeVllm(fail_after_tokens=3, token_interval_s=0.02)
    async with running_sidecar(tmp_path, fake) as h:
        received: list[pb.GenerateResponse] = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async with grpc.aio.insecure_channel(h.grpc_target) as channel:
                async for message in stubs.sidecar(channel).Generate(_request(max_tokens=10)):
                    received.append(message)
        # what arrived before the crash is relayed (aiohttp may drop bytes buffered when the socket breaks)
        assert 1 <= sum(m.tokens for m in received) <= 3
        assert caught.value.code() in {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE}
        assert _metadata(caught.value)["sloguard-reason"] in {"engine_error", "engine_unavailable"}
        assert "engine" in (caught.value.details() or "")
        await fake.stop()  # now the engine is gone entirely
        await wait_until(lambda: not h.sidecar.lifecycle.engine_up, what="engine marked down")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _collect(h, _request())
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert _metadata(caught.value)["sloguard-reason"] == "engine_unavailable"
        outcomes = h.outcomes()
        assert sum(outcomes.values()) == 2
        assert outcomes[("interactive", "rejected", "engine_unavailable")] == 1
        assert h.sample("sloguard_engine_up") == 0


async def _listed_services(channel: grpc.aio.Channel) -> set[str]:
    responses = stubs.reflection(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    return {s.name async for r in responses for s in r.list_services_response.service}


async def test_control_is_served_on_its_own_loopback_port_only(tmp_path: Path) -> None:
    async with running_sidecar(tmp_path) as h:
        assert h.sidecar.control_port not in (0, h.sidecar.grpc_port)
        async with grpc.aio.insecure_channel(h.grpc_target) as channel:
            assert "sloguard.v1.Control" not in await _listed_services(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stubs.control(channel).Drain(pb.DrainRequest(grace_ms=0))
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert not h.sidecar.lifecycle.draining
        async with grpc.aio.insecure_channel(h.control_target) as channel:
            assert "sloguard.v1.Control" in await _listed_services(channel)
            assert "sloguard.v1.Sidecar" not in await _listed_services(channel)


async def test_health_reflection_and_control(tmp_path: Path) -> None:
    async with (
        running_sidecar(tmp_path) as h,
        grpc.aio.insecure_channel(h.grpc_target) as channel,
        grpc.aio.insecure_channel(h.control_target) as control_channel,
    ):
        status = await stubs.health(channel).Check(
            health_pb2.HealthCheckRequest(service="sloguard.v1.Sidecar")
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        assert {"sloguard.v1.Sidecar", "grpc.health.v1.Health"} <= await _listed_services(channel)
        control = stubs.control(control_channel)
        state = await control.GetState(pb.GetStateRequest())
        assert (
            state.pool == "test-pool"
            and state.policy == "fcfs"
            and state.engine_healthy
            and not state.draining
        )
        assert [c.slo_class for c in state.classes] == ["interactive", "batch"]
        assert state.in_flight_cap == 64 and not state.cap_overridden and state.predictor == "proxy-mlp"
        pinned = await control.SetLimits(pb.SetLimitsRequest(in_flight_cap=3))
        assert pinned.in_flight_cap == 3 and pinned.cap_overridden
        assert h.sample("sloguard_in_flight_cap") == 3
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await control.SetLimits(pb.SetLimitsRequest(min_in_flight=10, max_in_flight=5))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        cleared = await control.SetLimits(pb.SetLimitsRequest(clear_override=True, max_in_flight=8))
        assert cleared.in_flight_cap == 8 and not cleared.cap_overridden
        estimate = await stubs.sidecar(channel).Estimate(_request())
        assert estimate.admitted


async def test_concurrent_streams_all_end_exactly_once(tmp_path: Path) -> None:
    fake = FakeVllm(token_interval_s=0.001)
    async with running_sidecar(
        tmp_path, fake, limits={"max_queue_depth": 64, "min_in_flight": 1, "max_in_flight": 4}
    ) as h:
        results = await asyncio.gather(
            *(
                _collect(h, _request(max_tokens=8, slo_class="batch" if i % 2 else "interactive"))
                for i in range(20)
            ),
            return_exceptions=True,
        )
        assert all(isinstance(r, list) and sum(m.tokens for m in r) == 8 for r in results)
        assert h.total_ended() == 20
        assert h.sample("sloguard_in_flight", slo_class="batch") == 0
        assert 1 <= fake.peak_active <= 4  # the in-flight cap held


async def test_an_engine_abort_is_a_failure_not_a_completion(tmp_path: Path) -> None:
    async with running_sidecar(tmp_path, FakeVllm(abort_after_tokens=2)) as h:
        received: list[pb.GenerateResponse] = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async with grpc.aio.insecure_channel(h.grpc_target) as channel:
                async for message in stubs.sidecar(channel).Generate(_request(max_tokens=10)):
                    received.append(message)
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert _metadata(caught.value)["sloguard-reason"] == "engine_abort"
        assert sum(m.tokens for m in received) == 2
        assert h.outcomes() == {("interactive", "failed", "engine_abort"): 1}
