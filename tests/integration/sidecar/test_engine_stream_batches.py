"""EngineClient.stream over a real socket: one list per read, whatever the read boundaries (issue 8)."""

import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from sloguard.sidecar.engine_client import EngineChunk, EngineClient
from sloguard.sidecar.hop_timing import Hop, HopTimer


def _event(i: int, finish: str | None = None) -> bytes:
    payload = {
        "id": "cmpl-1",
        "choices": [{"index": 0, "text": f" t{i}", "finish_reason": finish}],
        "usage": {"prompt_tokens": 3, "completion_tokens": i + 1},
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


BODY = b"".join(_event(i, "length" if i == 5 else None) for i in range(6)) + b"data: [DONE]\n\n"
Writer = Callable[[web.StreamResponse], Coroutine[Any, Any, None]]


@asynccontextmanager
async def _engine(write: Writer) -> AsyncIterator[EngineClient]:
    async def completions(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await write(response)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            yield EngineClient(session, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


async def _batches(client: EngineClient, hops: HopTimer | None = None) -> list[list[EngineChunk]]:
    stream = client.stream("completions", {"prompt": "x"}, request_id="r1", priority=None, hops=hops)
    return [batch async for batch in stream]


async def test_a_stream_written_in_small_pieces_arrives_whole() -> None:
    async def in_pieces(response: web.StreamResponse) -> None:
        for start in range(0, len(BODY), 7):  # 7-byte pieces: SSE lines cut anywhere, JSON cut mid-token
            await response.write(BODY[start : start + 7])

    async with _engine(in_pieces) as client:
        batches = await _batches(client)
    chunks = [c for batch in batches for c in batch]
    assert all(batches)  # no empty lists
    assert [c.text for c in chunks] == [f" t{i}" for i in range(6)]
    assert [c.tokens for c in chunks] == [1] * 6
    assert chunks[-1].finish_reason == "length"


async def test_chunks_buffered_together_come_as_one_list_with_their_own_token_counts() -> None:
    async def at_once(response: web.StreamResponse) -> None:
        await response.write(BODY)

    hops = HopTimer()
    async with _engine(at_once) as client:
        batches = await _batches(client, hops)
    assert [len(b) for b in batches] == [6]
    assert [c.completion_tokens for c in batches[0]] == [1, 2, 3, 4, 5, 6]
    assert len({c.received_s for c in batches[0]}) == 1  # one read, one arrival time
    assert [hop for hop, _ in hops.durations_s()] == [Hop.ENGINE_CONNECT, Hop.ENGINE_FIRST_CHUNK]
