"""EngineClient.stream over a real socket: one list per read, whatever the read boundaries (issue 8)."""

import asyncio
import contextlib
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


def _paced(count: int, gap_s: float) -> Writer:
    async def write(response: web.StreamResponse) -> None:
        for i in range(count):
            await response.write(_event(i, "length" if i == count - 1 else None))
            await asyncio.sleep(gap_s)
        await response.write(b"data: [DONE]\n\n")

    return write


async def test_a_held_stream_is_read_in_bursts_and_loses_nothing() -> None:
    """With `read_hold_s`, the engine's chunks wait in the socket and come in a few reads, every one kept."""
    asked: list[int] = []

    def hold_s() -> float:
        asked.append(1)
        return 0.25

    async with _engine(_paced(12, 0.02)) as client:  # 12 chunks over about 0.24 s
        stream = client.stream(
            "completions", {"prompt": "x"}, request_id="r1", priority=None, read_hold_s=hold_s
        )
        batches = [batch async for batch in stream]
    chunks = [c for batch in batches for c in batch]
    assert [c.completion_tokens for c in chunks] == list(range(1, 13))
    assert chunks[-1].finish_reason == "length"
    assert len(batches[0]) >= 1 and batches[0][0].completion_tokens == 1  # the first token is read at once
    assert len(batches) <= 3  # the first token, then one or two held reads, not one read per chunk
    assert len(asked) == len(batches) - 1 or len(asked) == len(
        batches
    )  # asked after each batch past the first


async def test_without_a_hold_every_paced_chunk_is_its_own_read() -> None:
    async with _engine(_paced(6, 0.03)) as client:
        stream = client.stream(
            "completions", {"prompt": "x"}, request_id="r1", priority=None, read_hold_s=lambda: 0.0
        )
        batches = [batch async for batch in stream]
    assert sum(len(b) for b in batches) == 6
    assert len(batches) >= 4  # the contrast to the held stream (a stalled host may merge a few)


async def test_a_client_that_leaves_during_a_hold_closes_the_engine_connection() -> None:
    """Cancelling the consumer mid-hold aborts upstream (vLLM stops on a closed connection)."""
    closed = asyncio.Event()

    async def slow(response: web.StreamResponse) -> None:
        try:
            for i in range(1000):
                await response.write(_event(i))
                await asyncio.sleep(0.01)
        except (ConnectionResetError, asyncio.CancelledError):
            closed.set()
            raise

    async with _engine(slow) as client:
        stream = client.stream(
            "completions", {"prompt": "x"}, request_id="r1", priority=None, read_hold_s=lambda: 10.0
        )
        first = await anext(stream)
        assert first[0].completion_tokens == 1
        pending = asyncio.ensure_future(anext(stream))  # now held for 10 s
        await asyncio.sleep(0.05)
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
        await stream.aclose()
        await asyncio.wait_for(closed.wait(), timeout=30.0)
