"""The engine link (sloguard_testing/engine_link.py) against a small SSE server on loopback: it relays
bytes unchanged, freezes a response after its first event and resumes it whole, cuts every connection,
and refuses connections while down, then listens on the same port again."""

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from sloguard_testing.engine_link import EngineLink

EVENTS = [f'data: {{"n":{i}}}\n\n'.encode() for i in range(5)] + [b"data: [DONE]\n\n"]


async def _stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for event in EVENTS:
        await response.write(event)
    await response.write_eof()
    return response


async def _health(_: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.fixture
async def link() -> AsyncIterator[EngineLink]:
    app = web.Application()
    app.router.add_post("/stream", _stream)
    app.router.add_get("/health", _health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    relay = EngineLink("127.0.0.1", runner.addresses[0][1])
    await relay.start()
    yield relay
    await relay.stop()
    await runner.cleanup()


async def _first_line(response: aiohttp.ClientResponse) -> bytes:
    async for line in response.content:
        if line.strip():
            return line.strip()
    raise AssertionError("no event")


async def test_bytes_are_relayed_unchanged(link: EngineLink) -> None:
    async with aiohttp.ClientSession() as session, session.post(f"{link.url}/stream") as response:
        assert await response.read() == b"".join(EVENTS)
    assert link.accepted == 1


async def test_a_held_response_stops_after_its_first_event_and_resumes_whole(link: EngineLink) -> None:
    link.hold()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{link.url}/health") as health:  # no SSE event: never frozen
            assert await health.text() == "ok"
        response = await session.post(f"{link.url}/stream")
        assert await _first_line(response) == EVENTS[0].strip()
        assert link.frozen_responses == 1
        link.release()
        assert await response.read() == b"\n" + b"".join(EVENTS[1:])  # the first event's blank line on
        response.close()
    assert link.frozen_responses == 0


async def test_cut_closes_a_frozen_stream_mid_way(link: EngineLink) -> None:
    link.hold()
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{link.url}/stream")
        await _first_line(response)
        await link.cut()
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
        response.close()
        assert link.frozen_responses == 0
        async with session.post(f"{link.url}/stream") as again:  # cut disarmed the hold
            assert await again.read() == b"".join(EVENTS)


async def test_down_refuses_connections_until_up_on_the_same_port(link: EngineLink) -> None:
    port = link.port
    await link.down()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(f"{link.url}/health")
        await link.up()
        assert link.port == port
        async with session.get(f"{link.url}/health") as health:
            assert health.status == 200


async def test_drop_next_closes_the_next_requests_before_relaying_them(link: EngineLink) -> None:
    link.drop_next(2)
    for _ in range(2):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
                await session.post(f"{link.url}/stream")  # POST: aiohttp retries no POST by itself
    async with aiohttp.ClientSession() as session, session.post(f"{link.url}/stream") as response:
        assert await response.read() == b"".join(EVENTS)
    assert link.dropped == 2


async def test_close_reused_closes_a_second_request_on_an_answered_connection(link: EngineLink) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{link.url}/stream") as response:
            assert await response.read() == b"".join(EVENTS)
        link.close_reused()
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            async with session.post(f"{link.url}/stream") as response:  # on the pooled connection
                await response.read()
    async with aiohttp.ClientSession() as fresh, fresh.post(f"{link.url}/stream") as response:
        assert await response.read() == b"".join(EVENTS)  # a new connection's first request goes through
    assert link.dropped == 1
