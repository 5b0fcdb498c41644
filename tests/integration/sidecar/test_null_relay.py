"""bench/null_relay.py, the sidecar-overhead benchmark's floor: it relays the engine's bytes unchanged."""

import re

import aiohttp
from aiohttp import web
from sloguard_testing.fake_vllm import FakeVllm

from sloguard.bench.null_relay import relay_app

BODY = {
    "model": "tiny",
    "prompt": "hi",
    "max_tokens": 4,
    "stream": True,
    "stream_options": {"include_usage": True},
}


async def test_the_null_relay_passes_the_stream_through_byte_for_byte() -> None:
    engine = FakeVllm()
    await engine.start()
    runner = web.AppRunner(relay_app(engine.url))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    relay_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{engine.url}/v1/completions", json=BODY) as resp:
                direct = await resp.read()
            async with session.post(f"{relay_url}/v1/completions", json=BODY) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/event-stream")
                relayed = await resp.read()
            async with session.get(f"{relay_url}/health") as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()
        await engine.stop()
    assert len(engine.requests) == 2 and engine.requests[0] == engine.requests[1]
    # the fake engine's ids and timestamps differ per request; everything else must be identical
    assert _normalised(relayed) == _normalised(direct)
    assert relayed.endswith(b"data: [DONE]\n\n")


def _normalised(raw: bytes) -> list[bytes]:
    return [re.sub(rb'"(id|created)":\s*("[^"]*"|\d+)', b"", line) for line in raw.split(b"\n")]
