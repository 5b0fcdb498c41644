"""The sidecar asks the engine to pack a request's tokens (vLLM's per-request `stream_interval`) only where
the engine's /version says it takes the field, and only as far as the wait bound allows at the pace the
relay has read (sidecar/core/stream_interval.py), over real sockets: what the engine receives is checked."""

import json
import socket
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sloguard_testing.sidecar_harness import sidecar_in_front, wait_until

from sloguard.api.sidecar_config import SidecarConfig
from sloguard.sidecar.engine_client import EngineChunk, EngineClient
from sloguard.sidecar.lifecycle import Lifecycle, ServeRequest
from sloguard.sidecar.metrics import SidecarMetrics


def _event(tokens: int, finish: str | None = None) -> bytes:
    payload = {
        "id": "cmpl-1",
        "choices": [{"index": 0, "text": " t", "finish_reason": finish}],
        "usage": {"prompt_tokens": 3, "completion_tokens": tokens},
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


@asynccontextmanager
async def _engine(version: str | None, received: list[dict[str, Any]], port: int = 0) -> AsyncIterator[str]:
    async def completions(request: web.Request) -> web.StreamResponse:
        received.append(await request.json())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_event(1) + _event(2, "length") + b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def version_of(_: web.Request) -> web.Response:
        if version is None:
            return web.Response(status=404)
        return web.json_response({"version": version})

    async def healthy(_: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/version", version_of)
    app.router.add_get("/health", healthy)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _config(url: str, stream_interval_max_s: float = 0.025) -> SidecarConfig:
    return SidecarConfig.model_validate(
        {
            "pool": {"name": "p"},
            "classes": [
                {"name": "tight", "ttft_s": 1.0, "tpot_s": 0.0055, "default": True},
                {"name": "loose", "ttft_s": 1.0, "tpot_s": 0.011},
            ],
            "policy": {"name": "fcfs"},
            "engine": {"url": url},
            "relay": {"stream_interval_max_s": stream_interval_max_s},
        }
    )


async def _send(lifecycle: Lifecycle, slo_class: str) -> None:
    serve = ServeRequest(endpoint="completions", body={"prompt": "x"}, slo_class=slo_class, max_tokens=2)
    async for _ in lifecycle.generate_batches(serve):
        pass


@pytest.mark.parametrize(
    ("version", "max_s", "expected"),
    [
        ("0.32.0", 0.025, {"tight": 8, "loose": 8}),  # 7 * 3.5 ms <= 25 ms, whatever the class
        ("0.32.0", 0.010, {"tight": 3, "loose": 3}),  # 2 * 3.5 ms <= 10 ms
        ("0.32.0", 0.0, {"tight": None, "loose": None}),  # switched off
        ("0.11.0", 0.025, {"tight": None, "loose": None}),  # a vLLM that would ignore the field
        (None, 0.025, {"tight": None, "loose": None}),  # no /version: not known to take it
    ],
)
async def test_the_engine_gets_a_stream_interval_only_where_it_takes_one(
    version: str | None, max_s: float, expected: dict[str, int | None]
) -> None:
    received: list[dict[str, Any]] = []
    async with _engine(version, received) as url, aiohttp.ClientSession() as session:
        client = EngineClient(session, url)
        await client.probe_features()
        assert client.stream_interval_supported is (version == "0.32.0")
        lifecycle = Lifecycle(_config(url, max_s), client, SidecarMetrics("p"))
        lifecycle.engine_up = True
        await _send(lifecycle, "loose")  # before the pace is known: plain streaming
        lifecycle.token_pace.observe(0.0035 * 64, 64)  # the engine's pace, as the relay would read it
        for slo_class in ("tight", "loose"):
            await _send(lifecycle, slo_class)
    assert "stream_interval" not in received[0]
    assert [body.get("stream_interval") for body in received[1:]] == [expected["tight"], expected["loose"]]
    registry = lifecycle.metrics.registry
    count = registry.get_sample_value("sloguard_engine_stream_interval_tokens_count", {"pool": "p"})
    total = registry.get_sample_value("sloguard_engine_stream_interval_tokens_sum", {"pool": "p"})
    assert (count, total) == (3, 1 + (expected["tight"] or 1) + (expected["loose"] or 1))


async def test_an_engine_that_does_not_answer_stays_unknown() -> None:
    async with aiohttp.ClientSession() as session:
        client = EngineClient(session, "http://127.0.0.1:9")
        await client.probe_features(timeout_s=1.0)
    assert client.stream_interval_supported is None


class _HoldRecordingClient(EngineClient):
    """Records whether each stream was given a read hold (sidecar/core/relay_hold.py)."""

    held: list[bool]

    def stream(self, *args: Any, **kwargs: Any) -> AsyncGenerator[list[EngineChunk], None]:
        self.held.append(kwargs.get("read_hold_s") is not None)
        return super().stream(*args, **kwargs)


@pytest.mark.parametrize(("version", "held_once_packed"), [("0.32.0", False), ("0.11.0", True)])
async def test_a_stream_the_engine_packs_is_not_held_by_the_relay_too(
    version: str, held_once_packed: bool
) -> None:
    received: list[dict[str, Any]] = []
    async with _engine(version, received) as url, aiohttp.ClientSession() as session:
        client = _HoldRecordingClient(session, url)
        client.held = []
        await client.probe_features()
        lifecycle = Lifecycle(_config(url), client, SidecarMetrics("p"))
        lifecycle.engine_up = True
        await _send(lifecycle, "loose")  # the pace is unknown: no packing, the relay may hold
        lifecycle.token_pace.observe(0.0035 * 64, 64)
        await _send(lifecycle, "loose")
    assert client.held == [True, held_once_packed]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_service_learns_what_an_engine_takes_once_it_comes_up(tmp_path: Path) -> None:
    """The sidecar starts before vLLM has loaded its model: /version is asked at the first good probe."""
    port = _free_port()
    async with sidecar_in_front(tmp_path, f"http://127.0.0.1:{port}") as handle:
        client = handle.sidecar.engine_client
        assert client.stream_interval_supported is None  # nothing answered yet
        async with _engine("0.32.0", [], port):
            await wait_until(lambda: client.stream_interval_supported is True, what="the feature probe")
