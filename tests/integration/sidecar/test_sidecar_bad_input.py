"""What fuzzing the fronts found (issue 16, item 5), each over real sockets in front of the fake vLLM:
deeply nested JSON, control characters in a gRPC request_id, a streaming client that leaves between two
writes, a drain grace that runs out while a front is relaying, and routing errors. Each is refused or
ended cleanly, counted once, and never logged as an error traceback.
"""

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from sloguard_testing import grpc_stubs as stubs
from sloguard_testing.fake_vllm import FakeVllm
from sloguard_testing.sidecar_harness import Harness, running_sidecar, sse_payloads, wait_until

from sloguard.sidecar import http_front
from sloguard.sidecar.errors import RequestFailed
from sloguard.sidecar.lifecycle import ServeRequest
from sloguard.sidecar.proto import sidecar_pb2 as pb

COMPLETION = {"model": "tiny", "prompt": "the quick brown fox", "max_tokens": 5}


def _nested(depth: int) -> bytes:
    return b'{"model":"tiny","prompt":"hi","extra":' + b"[" * depth + b"]" * depth + b"}"


def _errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("depth", [100_000, 1_000, 129])
async def test_json_nested_too_deep_is_a_400_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, depth: int
) -> None:
    """100,000 deep broke the parser (RecursionError, 500); 1,000 could parse but not be re-encoded."""
    async with running_sidecar(tmp_path) as h:
        headers = {"content-type": "application/json"}
        async with h.http.post(f"{h.http_url}/v1/completions", data=_nested(depth), headers=headers) as r:
            assert r.status == 400 and r.headers["x-sloguard-reason"] == "invalid_request"
            error = (await r.json())["error"]
        assert error["code"] == 400 and error["type"] == "BadRequestError" and "128 deep" in error["message"]
        assert h.outcomes() == {("_unresolved", "rejected", "invalid_request"): 1}
        assert h.engine.requests == []
        # a body nested just within the limit is served
        async with h.http.post(f"{h.http_url}/v1/completions", data=_nested(127), headers=headers) as r:
            assert r.status == 200
    assert _errors_logged(caplog) == []


@pytest.mark.parametrize("request_id", ["a\r\nb", "line\nfeed", "nul\x00byte", "bell\x07", "x" * 257])
async def test_a_grpc_request_id_the_engine_header_cannot_carry_is_invalid_argument_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, request_id: str
) -> None:
    async with running_sidecar(tmp_path) as h, grpc.aio.insecure_channel(h.grpc_target) as channel:
        request = pb.GenerateRequest(text="hi", max_tokens=4, request_id=request_id)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stubs.sidecar(channel).Generate(request):
                pass
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        metadata = {k: str(v) for k, v in (caught.value.trailing_metadata() or ())}
        assert metadata["sloguard-reason"] == "invalid_request" and "request_id" in (
            caught.value.details() or ""
        )
        estimate = await stubs.sidecar(channel).Estimate(request)
        assert not estimate.admitted and estimate.reason == "invalid_request"
        assert h.outcomes() == {("interactive", "rejected", "invalid_request"): 1}  # Estimate counts nothing
        assert h.engine.requests == []
        # a printable id (any script) goes through
        fine = pb.GenerateRequest(text="hi", max_tokens=2, request_id="ok-ünï-Ω-1")
        assert sum(m.tokens for m in [m async for m in stubs.sidecar(channel).Generate(fine)]) == 2
    assert _errors_logged(caplog) == []


async def test_a_streaming_client_that_leaves_between_writes_ends_cancelled_without_an_error_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp raises ClientConnectionResetError when the handler writes to a client that has just left
    (its transport closing before the handler is cancelled); the request ends as cancelled, once."""
    real_write = http_front._write_chunks
    writes = {"n": 0}

    async def write_then_find_the_client_gone(response: Any, chunks: list[bytes]) -> None:
        writes["n"] += 1
        if writes["n"] == 2:
            raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
        await real_write(response, chunks)

    monkeypatch.setattr(http_front, "_write_chunks", write_then_find_the_client_gone)
    fake = FakeVllm(token_interval_s=0.01)
    async with running_sidecar(tmp_path, fake) as h:
        body = {**COMPLETION, "max_tokens": 50, "stream": True}
        async with h.http.post(f"{h.http_url}/v1/completions", json=body) as response:
            assert response.status == 200
            assert "[DONE]" not in sse_payloads(await response.read())  # it stops where the client "left"
        await wait_until(lambda: h.total_ended() == 1, what="the outcome")
        assert h.outcomes() == {("interactive", "cancelled", "client"): 1}
        await wait_until(lambda: fake.aborted == 1, what="the upstream abort")
    assert _errors_logged(caplog) == []


async def test_a_drain_past_its_grace_fails_a_request_whose_front_is_relaying_with_reason_draining(
    tmp_path: Path,
) -> None:
    """Deterministic: the request's generator is suspended at a yield (its front is relaying a batch)
    when the grace runs out. The drain must not cancel the front's task (for gRPC that ends the call
    with UNAVAILABLE and no `sloguard-reason`); the request fails `draining` at its next batch."""
    fake = FakeVllm(token_interval_s=0.02)
    async with running_sidecar(tmp_path, fake) as h:
        lifecycle = h.sidecar.lifecycle
        serve = ServeRequest(endpoint="completions", body={"prompt": "hi", "max_tokens": 200}, max_tokens=200)
        batches = lifecycle.generate_batches(serve)
        assert await anext(batches)  # suspended at its yield now, as while a front writes to its client
        drained = asyncio.create_task(lifecycle.drain(0.01))
        await wait_until(
            lambda: lifecycle.draining and any(t.drain_killed for t in lifecycle._running.values())
        )
        with pytest.raises(RequestFailed) as caught:  # this task was not cancelled: it goes on
            while True:
                await anext(batches)
        assert caught.value.reason == "draining" and caught.value.grpc_status == grpc.StatusCode.UNAVAILABLE
        assert await asyncio.wait_for(drained, 10) is False
        assert h.outcomes() == {("interactive", "failed", "drain_timeout"): 1}
        await batches.aclose()
        await wait_until(lambda: fake.aborted == 1, what="the upstream abort")


async def test_grpc_streams_cut_by_the_drain_grace_all_end_with_reason_draining(tmp_path: Path) -> None:
    fake = FakeVllm(token_interval_s=0.001)
    async with running_sidecar(tmp_path, fake) as h:
        streams = 6

        async def stream(channel: grpc.aio.Channel) -> grpc.aio.AioRpcError | None:
            request = pb.GenerateRequest(
                text="hi", max_tokens=4000, sampling=pb.SamplingParams(ignore_eos=True)
            )
            try:
                async for _ in stubs.sidecar(channel).Generate(request):
                    pass
            except grpc.aio.AioRpcError as error:
                return error
            return None

        async with grpc.aio.insecure_channel(h.grpc_target) as channel:
            calls = [asyncio.create_task(stream(channel)) for _ in range(streams)]
            await wait_until(lambda: h.sidecar.lifecycle.in_flight == streams, what="all streams running")
            h.sidecar.request_drain(0.05)
            errors = await asyncio.wait_for(asyncio.gather(*calls), 30)
        await asyncio.wait_for(h.sidecar.wait_stopped(), 10)
        for error in errors:
            assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE, error
            metadata = {k: str(v) for k, v in (error.trailing_metadata() or ())}
            assert metadata.get("sloguard-reason") == "draining", (error.details(), metadata)
        assert h.outcomes() == {("interactive", "failed", "drain_timeout"): streams}


async def test_unknown_paths_and_methods_answer_in_vllms_shape(tmp_path: Path, h_engine: Any = None) -> None:
    async with running_sidecar(tmp_path) as h:
        await _assert_routing_errors(h)


async def _assert_routing_errors(h: Harness) -> None:
    """As vLLM 0.32 answers them (reference/vllm-behaviour.md §5), which is FastAPI's shape."""
    async with h.http.get(f"{h.http_url}/v1/completions") as response:
        assert response.status == 405 and await response.json() == {"detail": "Method Not Allowed"}
        assert response.headers["allow"] == "POST"
    async with h.http.get(f"{h.http_url}/v1/nothing") as response:
        assert response.status == 404 and await response.json() == {"detail": "Not Found"}
    async with h.http.post(f"{h.http_url}/v1/completions", json={**COMPLETION, "stream": True}) as response:
        assert response.status == 200 and sse_payloads(await response.read())[-1] == "[DONE]"
