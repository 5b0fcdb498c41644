"""The sidecar end to end in front of both engines: the simulator (`sloguard sim serve`) and real vLLM.

Every scenario runs against each engine kind (`vllm` ones are marked and share the session's real
server, engine_servers.SERVER_CONFIGS["fcfs"]; the simulator is one `sloguard sim serve` process per module
with the same settings). Real sockets on 127.0.0.1 throughout: HTTP and gRPC clients → an in-process
sidecar (sidecar_harness.sidecar_in_front) → an engine_link.EngineLink → the engine. The link lets a test
freeze a stream after its first event, cut every connection (the engine dying mid-stream) or refuse
connections (the engine down) without touching the shared engine process.

Every test ends by reading the sidecar's /metrics over HTTP and checking that each request it sent was
counted exactly once, under the outcome and reason it expected. What the sidecar relays is compared
with what the same engine answers directly, so the checks hold for the simulator and for vLLM alike.
Waits poll for conditions with generous bounds (real vLLM shares two slow cores); nothing asserts a
wall-clock latency.
"""

import asyncio
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sloguard_testing import grpc_stubs as stubs
from sloguard_testing.engine_link import EngineLink
from sloguard_testing.engine_servers import SERVED_MODEL, SERVER_CONFIGS, VLLM_TEST_TIMEOUT_S
from sloguard_testing.sidecar_harness import SidecarHandle, sidecar_config, sidecar_in_front
from sloguard_testing.vllm_server import vllm_servers  # noqa: F401 (the session fixture of the vllm kind)

from sloguard.sidecar.proto import sidecar_pb2 as pb

pytestmark = pytest.mark.slow

ENGINE_KINDS = [
    pytest.param("sim", id="sim"),
    pytest.param("vllm", id="vllm", marks=[pytest.mark.vllm, pytest.mark.timeout(VLLM_TEST_TIMEOUT_S)]),
]
ENGINE = SERVER_CONFIGS["fcfs"]  # two seats, max_model_len 512: both engines
LONG_TOKENS = 480  # a stream that runs on (prompt + output within max_model_len 512)
WAIT_S = 60.0  # bound of every wait for a condition (real vLLM on two shared cores is slow)
Outcomes = dict[tuple[str, str, str], float]


# ---- engines and sidecars --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def _sim_engine(log_path: Path) -> Iterator[str]:
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "sloguard",
        "sim",
        "serve",
        "--profile",
        "llama-3-8b-h100",
        "--port",
        str(port),
        "--scheduling-policy",
        ENGINE.scheduling_policy,
        "--max-num-seqs",
        str(ENGINE.max_num_seqs),
        "--max-model-len",
        str(ENGINE.max_model_len),
        "--served-model-name",
        SERVED_MODEL,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env={**os.environ, "PYTHONSAFEPATH": "1"}, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_S
        while not _answers(f"{url}/health"):
            assert process.poll() is None, f"sim engine exited: {log_path.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "sim engine not healthy"
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module", params=ENGINE_KINDS)
def engine_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a running engine of the kind, shared by the module's tests."""
    if request.param == "vllm":
        yield request.getfixturevalue("vllm_servers")["fcfs"]
        return
    with _sim_engine(tmp_path_factory.mktemp("sim") / "engine.log") as url:
        yield url


@pytest.fixture
async def link(engine_url: str) -> AsyncIterator[EngineLink]:
    """A fresh link to the (idle) engine."""
    async with aiohttp.ClientSession() as session:
        await _wait_for(lambda: _engine_idle(session, engine_url), "the engine to be idle")
    relay = EngineLink.to_url(engine_url)
    await relay.start()
    yield relay
    await relay.stop()


@pytest.fixture
async def side(tmp_path: Path, link: EngineLink) -> AsyncIterator[SidecarHandle]:
    """A sidecar (fcfs policy, the test classes) in front of the link."""
    async with sidecar_in_front(tmp_path, link.url) as handle:
        yield handle


# ---- helpers ---------------------------------------------------------------------------------------------


async def _wait_for(predicate: Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _engine_metrics(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


async def _engine_idle(session: aiohttp.ClientSession, base: str) -> bool:
    m = await _engine_metrics(session, base)
    return m["vllm:num_requests_running"] + m["vllm:num_requests_waiting"] == 0


async def outcomes_of(side: SidecarHandle) -> Outcomes:
    """(slo_class, outcome, reason) -> count, read from the sidecar's /metrics over HTTP; zeros left out."""
    async with side.http.get(f"{side.metrics_url}/metrics") as response:
        text = await response.text()
    found: Outcomes = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "sloguard_requests_total" and s.value:
                found[(s.labels["slo_class"], s.labels["outcome"], s.labels["reason"])] = s.value
    return found


async def assert_counted_once(side: SidecarHandle, expected: Outcomes) -> None:
    """Every request sent ended, and was counted exactly once, as `expected` (waits for late ends)."""
    sent = sum(expected.values())
    with contextlib.suppress(AssertionError):
        await _wait_for(lambda: _ended_at_least(side, sent), f"{sent} requests to end", timeout_s=WAIT_S)
    assert await outcomes_of(side) == expected


async def _ended_at_least(side: SidecarHandle, n: float) -> bool:
    return sum((await outcomes_of(side)).values()) >= n


def _completion(max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"prompt": "the quick brown fox", "max_tokens": max_tokens, "ignore_eos": True, **extra}


def _chat(max_tokens: int, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": "the quick brown fox"}]
    return {"messages": messages, "max_tokens": max_tokens, "ignore_eos": True, **extra}


async def _sse(response: aiohttp.ClientResponse) -> list[Any]:
    """The data payloads of a whole SSE body; `[DONE]` stays a string."""
    out: list[Any] = []
    async for raw in response.content:
        line = raw.decode().strip()
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def _first_event(response: aiohttp.ClientResponse) -> Any:
    async for raw in response.content:
        line = raw.decode().strip()
        if line.startswith("data: "):
            return json.loads(line.removeprefix("data: "))
    raise AssertionError("the stream ended before its first event")


def _layout(value: Any) -> Any:
    """The member names of a JSON value, in order and recursively (values left out, lists by element)."""
    if isinstance(value, dict):
        return [(k, _layout(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_layout(v) for v in value]
    return None


def _chunk_shapes(events: list[Any]) -> list[Any]:
    """Each chunk's layout, one entry per run of equal layouts (an engine under load may coalesce tokens
    into fewer chunks, reference/vllm-behaviour.md §3.9, so the number of chunks may differ)."""
    shapes: list[Any] = []
    for event in events:
        shape = "[DONE]" if event == "[DONE]" else _layout(event)
        if not shapes or shapes[-1] != shape:
            shapes.append(shape)
    return shapes


async def _post_sse(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> list[Any]:
    async with session.post(url, json=body) as response:
        assert response.status == 200, await response.text()
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        return await _sse(response)


async def _sidecar_state(side: SidecarHandle) -> pb.GetStateResponse:
    async with grpc.aio.insecure_channel(side.control_target) as channel:
        state: pb.GetStateResponse = await stubs.control(channel).GetState(pb.GetStateRequest())
        return state


def _reason(error: grpc.aio.AioRpcError) -> str:
    return str(dict(error.trailing_metadata() or ()).get("sloguard-reason", ""))


# ---- streaming and answers -------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
async def test_streams_look_exactly_as_the_engine_sends_them(
    side: SidecarHandle, engine_url: str, endpoint: str
) -> None:
    """Whatever stream_options the client sends, it gets the engine's own chunk layout: no usage unless
    asked, the fingerprint on the finish chunk (or on the usage chunk when usage was asked for)."""
    path = "/v1/completions" if endpoint == "completions" else "/v1/chat/completions"
    make = _completion if endpoint == "completions" else _chat
    wishes: list[dict[str, Any] | None] = [
        None,
        {"include_usage": True},
        {"include_usage": True, "continuous_usage_stats": True},
    ]
    sent = 0
    for options in wishes:
        body = make(16, stream=True, **({} if options is None else {"stream_options": options}))
        for _attempt in range(3):
            direct = await _post_sse(side.http, f"{engine_url}{path}", body)
            relayed = await _post_sse(side.http, f"{side.http_url}{path}", body)
            sent += 1
            # precondition: neither stream had all its tokens coalesced into the finish chunk (an engine
            # process stalled for the whole generation on a loaded machine, vllm-behaviour.md §3.9)
            if min(_token_chunks(direct), _token_chunks(relayed)) >= 2:
                break
        assert _chunk_shapes(relayed) == _chunk_shapes(direct), options
        chunks = [e for e in relayed if isinstance(e, dict)]
        assert relayed[-1] == "[DONE]"
        fingerprinted = [i for i, c in enumerate(chunks) if "system_fingerprint" in c]
        assert fingerprinted == [len(chunks) - 1], options  # only the last chunk carries it
        if options is None:
            assert all("usage" not in c for c in chunks)
            assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        else:
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 16
    await assert_counted_once(side, {("interactive", "completed", ""): sent})


def _token_chunks(events: list[Any]) -> int:
    """Chunks that carry a choice (role, content or finish), as opposed to the usage-only one."""
    return sum(1 for e in events if isinstance(e, dict) and e.get("choices"))


async def test_unstreamed_answers_have_the_engines_layout(side: SidecarHandle, engine_url: str) -> None:
    for path, body in (("/v1/completions", _completion(5)), ("/v1/chat/completions", _chat(5))):
        async with side.http.post(f"{engine_url}{path}", json=body) as response:
            direct = await response.json()
        async with side.http.post(f"{side.http_url}{path}", json=body) as response:
            assert response.status == 200
            relayed = await response.json()
        assert _layout(relayed) == _layout(direct), path
        assert relayed["usage"] == direct["usage"] and relayed["usage"]["completion_tokens"] == 5
        assert relayed["choices"][0]["finish_reason"] == "length"
        assert relayed["model"] == direct["model"] and relayed["system_fingerprint"].startswith("vllm-")
    await assert_counted_once(side, {("interactive", "completed", ""): 2})


async def test_routing_errors_are_answered_as_the_engine_answers_them(
    side: SidecarHandle, engine_url: str
) -> None:
    for method, path in (("GET", "/v1/completions"), ("PUT", "/v1/chat/completions"), ("GET", "/v1/nothing")):
        async with side.http.request(method, f"{engine_url}{path}") as response:
            direct = (response.status, await response.json(), response.headers.get("allow"))
        async with side.http.request(method, f"{side.http_url}{path}") as response:
            relayed = (response.status, await response.json(), response.headers.get("allow"))
        assert relayed == direct, (method, path)
    await assert_counted_once(side, {})


async def test_grpc_generate_streams_every_token_with_its_timing(side: SidecarHandle) -> None:
    async with grpc.aio.insecure_channel(side.grpc_target) as channel:
        request = pb.GenerateRequest(
            slo_class="batch",
            text="the quick brown fox",
            max_tokens=24,
            sampling=pb.SamplingParams(ignore_eos=True),
        )
        messages = [m async for m in stubs.sidecar(channel).Generate(request)]
        by_ids = [
            m
            async for m in stubs.sidecar(channel).Generate(
                pb.GenerateRequest(
                    token_ids=pb.TokenIds(ids=list(range(10, 30))),
                    max_tokens=3,
                    sampling=pb.SamplingParams(ignore_eos=True),
                )
            )
        ]
    assert sum(m.tokens for m in messages) == 24
    cumulative = [m.completion_tokens for m in messages]
    assert cumulative == sorted(cumulative) and cumulative[-1] == 24
    assert [m.first for m in messages].count(True) == 1 and messages[0].first == (messages[0].tokens > 0)
    times_ms = [m.time_since_arrival_ms for m in messages]
    assert times_ms == sorted(times_ms) and times_ms[0] > 0
    assert messages[-1].finish_reason == "length" and all(m.finish_reason == "" for m in messages[:-1])
    assert len({m.request_id for m in messages}) == 1 and messages[0].request_id
    assert max(m.prompt_tokens for m in messages) > 0
    assert sum(m.tokens for m in by_ids) == 3 and max(m.prompt_tokens for m in by_ids) == 20
    await assert_counted_once(side, {("batch", "completed", ""): 1, ("interactive", "completed", ""): 1})


# ---- rejections ------------------------------------------------------------------------------------------


async def test_a_full_queue_is_refused_with_retry_after_on_both_fronts(
    tmp_path: Path, link: EngineLink
) -> None:
    limits = {"max_queue_depth": 1, "min_in_flight": 1, "max_in_flight": 1}
    async with sidecar_in_front(tmp_path, link.url, limits=limits) as side:
        link.hold()  # the first request's stream stays open after its first event: it holds the one seat
        running = await side.http.post(
            f"{side.http_url}/v1/completions", json=_completion(LONG_TOKENS, stream=True)
        )
        await _first_event(running)
        queued = asyncio.ensure_future(side.http.post(f"{side.http_url}/v1/completions", json=_completion(4)))
        await _wait_for(lambda: _queued(side, 1), "the second request to queue")

        async with side.http.post(f"{side.http_url}/v1/completions", json=_completion(4)) as refused:
            assert refused.status == 429
            assert refused.headers["x-sloguard-reason"] == "queue_full"
            assert int(refused.headers["Retry-After"]) >= 1
            assert (await refused.json())["error"]["reason"] == "queue_full"
        async with grpc.aio.insecure_channel(side.grpc_target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stubs.sidecar(channel).Generate(pb.GenerateRequest(text="hi", max_tokens=4)).read()
        assert (
            caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            and _reason(caught.value) == "queue_full"
        )
        assert int(dict(caught.value.trailing_metadata() or ())["sloguard-retry-after-ms"]) > 0

        link.release()  # the seat holder runs to the end, then the queued one
        assert (await _sse(running))[-1] == "[DONE]"
        running.close()
        async with await queued as answer:
            assert answer.status == 200 and (await answer.json())["usage"]["completion_tokens"] == 4
        await assert_counted_once(
            side, {("interactive", "completed", ""): 2, ("interactive", "rejected", "queue_full"): 2}
        )


async def _queued(side: SidecarHandle, n: int) -> bool:
    return side.sidecar.lifecycle.queued == n


async def test_bad_http_input_is_refused_as_invalid_and_counted(side: SidecarHandle) -> None:
    url = f"{side.http_url}/v1/completions"
    max_prompt_bytes = 32768 * 4 + 8  # over the default limit of 32768 prompt tokens (4 bytes a token)
    cases: list[tuple[dict[str, Any], str, str]] = [  # (request kwargs, reason, class label)
        (
            {"data": b'{"prompt": "hi",', "headers": {"content-type": "application/json"}},
            "invalid_request",
            "_unresolved",
        ),
        ({"json": _completion(4), "headers": {"x-slo-class": "nope"}}, "unknown_class", "_unresolved"),
        ({"json": _completion(-1)}, "invalid_request", "interactive"),
        ({"json": _completion(10**9)}, "invalid_request", "interactive"),
        ({"json": {**_completion(4), "prompt": "x" * max_prompt_bytes}}, "invalid_request", "interactive"),
        # within the sidecar's limits, beyond the engine's max_model_len 512: the engine's 400, relayed
        ({"json": _completion(1000)}, "invalid_request", "interactive"),
        (
            {"json": {**_completion(4), "prompt": [10 + i % 400 for i in range(600)]}},
            "invalid_request",
            "interactive",
        ),
        ({"data": io.BytesIO(b'{"prompt": "' + b"x" * (2 << 20) + b'"}')}, "invalid_request", "_unresolved"),
    ]
    expected: Outcomes = {}
    for kwargs, reason, label in cases:
        async with side.http.post(url, **kwargs) as response:
            assert response.status == 400, (kwargs.get("json", kwargs.get("data")), await response.text())
            assert response.headers["x-sloguard-reason"] == reason
            error = (await response.json())["error"]
            assert (
                error["reason"] == reason and error["code"] == 400 and "Retry-After" not in response.headers
            )
        expected[(label, "rejected", reason)] = expected.get((label, "rejected", reason), 0) + 1
    await assert_counted_once(side, expected)


async def test_bad_grpc_input_is_refused_as_invalid_argument_and_counted(side: SidecarHandle) -> None:
    async with grpc.aio.insecure_channel(side.grpc_target) as channel:
        raw: Any = channel.unary_stream("/sloguard.v1.Sidecar/Generate")  # no serializer: bytes as they are
        with pytest.raises(grpc.aio.AioRpcError) as garbage:
            await raw(b"\xff\xfe this is not a protobuf \x00\x01").read()
        assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        generate = stubs.sidecar(channel).Generate
        cases = [
            (pb.GenerateRequest(text="hi", max_tokens=4, slo_class="nope"), "unknown_class"),
            (pb.GenerateRequest(text="hi", max_tokens=-5), "invalid_request"),
            (pb.GenerateRequest(text="hi", max_tokens=10**9), "invalid_request"),
            (pb.GenerateRequest(text="hi", targets=pb.SLOTargets(ttft_ms=-1)), "invalid_request"),
            (pb.GenerateRequest(max_tokens=4), "invalid_request"),  # no prompt
            (pb.GenerateRequest(text="hi", max_tokens=1000), "invalid_request"),  # the engine's 400
        ]
        for message, reason in cases:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await generate(message).read()
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, message
            assert _reason(caught.value) == reason, message
    await assert_counted_once(
        side,
        {
            ("_unresolved", "rejected", "invalid_request"): 3,  # garbage, negative target, no prompt
            ("_unresolved", "rejected", "unknown_class"): 1,
            ("interactive", "rejected", "invalid_request"): 3,
        },
    )


# ---- clients leaving, engines failing --------------------------------------------------------------------


async def test_a_client_leaving_aborts_the_engine_request(side: SidecarHandle, link: EngineLink) -> None:
    """HTTP disconnect and gRPC cancel mid-stream: the sidecar closes its engine connection at once."""
    link.hold()
    response = await side.http.post(
        f"{side.http_url}/v1/completions", json=_completion(LONG_TOKENS, stream=True)
    )
    await _first_event(response)
    assert link.frozen_responses == 1
    response.close()  # the client leaves mid-stream
    await _wait_for(lambda: _no_frozen(link), "the sidecar to close its engine connection (HTTP)")

    async with grpc.aio.insecure_channel(side.grpc_target) as channel:
        call = stubs.sidecar(channel).Generate(
            pb.GenerateRequest(text="hi", max_tokens=LONG_TOKENS, sampling=pb.SamplingParams(ignore_eos=True))
        )
        first = await call.read()
        assert first.first and first.tokens >= 1 and link.frozen_responses == 1
        call.cancel()
        await _wait_for(lambda: _no_frozen(link), "the sidecar to close its engine connection (gRPC)")
    async with aiohttp.ClientSession() as session:
        await _wait_for(
            lambda: _engine_idle(session, f"http://{link.engine_host}:{link.engine_port}"), "idle"
        )
    await assert_counted_once(side, {("interactive", "cancelled", "client"): 2})


async def _no_frozen(link: EngineLink) -> bool:
    return link.frozen_responses == 0


async def test_a_grpc_deadline_ends_the_request_and_its_engine_call(
    side: SidecarHandle, link: EngineLink
) -> None:
    """The client's deadline passes mid-stream (frozen by the link): DEADLINE_EXCEEDED, the engine
    connection closed, one `cancelled` end (`deadline_exceeded` when the sidecar's own timer fired first,
    `client` when gRPC cancelled the call first)."""
    link.hold()
    async with grpc.aio.insecure_channel(side.grpc_target) as channel:
        call = stubs.sidecar(channel).Generate(
            pb.GenerateRequest(
                text="hi", max_tokens=LONG_TOKENS, sampling=pb.SamplingParams(ignore_eos=True)
            ),
            timeout=3.0,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            while await call.read() != grpc.aio.EOF:
                pass
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await _wait_for(lambda: _no_frozen(link), "the sidecar to close its engine connection")
    await _wait_for(lambda: _ended_at_least(side, 1), "the request to end")
    ended = await outcomes_of(side)
    assert ended in (
        {("interactive", "cancelled", "deadline_exceeded"): 1},
        {("interactive", "cancelled", "client"): 1},
    )


async def test_the_engine_dying_mid_stream_fails_the_request_once(
    side: SidecarHandle, link: EngineLink
) -> None:
    link.hold()
    http_stream = await side.http.post(
        f"{side.http_url}/v1/chat/completions", json=_chat(LONG_TOKENS, stream=True)
    )
    await _first_event(http_stream)
    async with grpc.aio.insecure_channel(side.grpc_target) as channel:
        call = stubs.sidecar(channel).Generate(
            pb.GenerateRequest(text="hi", max_tokens=LONG_TOKENS, sampling=pb.SamplingParams(ignore_eos=True))
        )
        await call.read()
        await link.cut()  # both engine connections close mid-stream, as when the engine dies
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            while await call.read() != grpc.aio.EOF:
                pass
    assert caught.value.code() == grpc.StatusCode.INTERNAL and _reason(caught.value) == "engine_error"
    rest = await _sse(http_stream)
    assert rest[-1] == "[DONE]" and rest[-2]["error"]["reason"] == "engine_error"
    http_stream.close()
    # the engine itself is fine: the sidecar stays ready and serves the next request
    async with side.http.get(f"{side.metrics_url}/readyz") as ready:
        assert ready.status == 200
    async with side.http.post(f"{side.http_url}/v1/completions", json=_completion(3)) as response:
        assert response.status == 200
    await assert_counted_once(
        side, {("interactive", "failed", "engine_error"): 2, ("interactive", "completed", ""): 1}
    )


async def test_an_engine_down_then_back_is_refused_then_served(tmp_path: Path, link: EngineLink) -> None:
    """The probe is effectively off (as in `sloguard demo`): the failed request (refused even on its fresh
    retry) makes the sidecar probe at once, failed probes in a row mark the engine down, and the sidecar
    re-checks a down engine every second (service.DOWN_PROBE_INTERVAL_S) until it is back."""
    async with sidecar_in_front(tmp_path, link.url, health_interval_s=3600.0) as side:
        await link.down()
        async with side.http.post(f"{side.http_url}/v1/completions", json=_completion(4)) as failed:
            assert failed.status == 503 and failed.headers["x-sloguard-reason"] == "engine_unavailable"
        await _wait_for(lambda: _ready(side, 503), "failed probes to mark the engine down")
        async with side.http.post(f"{side.http_url}/v1/completions", json=_completion(4)) as refused:
            assert refused.status == 503 and refused.headers["x-sloguard-reason"] == "engine_unavailable"
            assert int(refused.headers["Retry-After"]) >= 1
        async with grpc.aio.insecure_channel(side.grpc_target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stubs.sidecar(channel).Generate(pb.GenerateRequest(text="hi", max_tokens=4)).read()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert _reason(caught.value) == "engine_unavailable"

        await link.up()
        await _wait_for(lambda: _ready(side, 200), "the sidecar to see the engine back")
        async with side.http.post(f"{side.http_url}/v1/completions", json=_completion(4)) as served:
            assert served.status == 200
        await assert_counted_once(
            side,
            {
                ("interactive", "failed", "engine_unavailable"): 1,
                ("interactive", "rejected", "engine_unavailable"): 2,
                ("interactive", "completed", ""): 1,
            },
        )


async def _ready(side: SidecarHandle, status: int) -> bool:
    return await _status_is(side.http, f"{side.metrics_url}/readyz", status)


# ---- operations: reload and drain ------------------------------------------------------------------------


async def test_config_reload_good_then_bad_keeps_serving(side: SidecarHandle, link: EngineLink) -> None:
    link.hold()  # one stream in flight across both reloads
    running = await side.http.post(
        f"{side.http_url}/v1/completions", json=_completion(LONG_TOKENS, stream=True)
    )
    await _first_event(running)

    config = sidecar_config(link.url)
    config["classes"] = [*config["classes"], {"name": "bulk", "ttft_s": 60.0, "tpot_s": 5.0, "priority": -5}]
    side.write_config(config)
    await _wait_for(lambda: _reloads(side, "applied", 1), "the good configuration to apply")
    link.release()
    async with side.http.post(
        f"{side.http_url}/v1/completions", json=_completion(3), headers={"x-slo-class": "bulk"}
    ) as response:
        assert response.status == 200

    side.write_config('{"version": 1, "classes": [')  # not even JSON
    await _wait_for(lambda: _reloads(side, "invalid", 1), "the bad configuration to be refused")
    state = await _sidecar_state(side)
    assert {c.slo_class for c in state.classes} == {"interactive", "batch", "bulk"}
    async with side.http.post(
        f"{side.http_url}/v1/completions", json=_completion(3), headers={"x-slo-class": "bulk"}
    ) as response:
        assert response.status == 200
    assert (await _sse(running))[-1] == "[DONE]"
    running.close()
    await assert_counted_once(side, {("interactive", "completed", ""): 1, ("bulk", "completed", ""): 2})


async def _reloads(side: SidecarHandle, result: str, n: int) -> bool:
    return side.sample("sloguard_config_reloads_total", result=result) >= n


@pytest.mark.parametrize("finishes", [True, False], ids=["within_grace", "past_grace"])
async def test_drain_lets_in_flight_requests_finish_or_fails_them_once(
    side: SidecarHandle, link: EngineLink, finishes: bool
) -> None:
    """Within the grace, new work is refused (UNAVAILABLE / 503 `draining`) while the stream finishes;
    past it, the stream ends with a `draining` error event and counts as failed, once."""
    link.hold()
    running = await side.http.post(
        f"{side.http_url}/v1/completions", json=_completion(LONG_TOKENS, stream=True)
    )
    await _first_event(running)
    async with (
        grpc.aio.insecure_channel(side.control_target) as control,
        grpc.aio.insecure_channel(side.grpc_target) as channel,
    ):
        drained = await stubs.control(control).Drain(pb.DrainRequest(grace_ms=60_000 if finishes else 200))
        assert drained.in_flight == 1
        if finishes:  # (past the grace, the sidecar may be gone before a request could be refused)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stubs.sidecar(channel).Generate(pb.GenerateRequest(text="hi", max_tokens=4)).read()
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and _reason(caught.value) == "draining"
            async with side.http.post(f"{side.http_url}/v1/completions", json=_completion(4)) as refused:
                assert refused.status == 503 and refused.headers["x-sloguard-reason"] == "draining"
            assert await _ready(side, 503)
            link.release()
    events = await _sse(running)
    running.close()
    await asyncio.wait_for(side.sidecar.wait_stopped(), WAIT_S)  # drained: its ports are closed now
    if finishes:
        assert events[-2]["choices"][0]["finish_reason"] == "length"
        expected = {("interactive", "completed", ""): 1, ("interactive", "rejected", "draining"): 2}
    else:
        assert events[-2]["error"]["reason"] == "draining"
        expected = {("interactive", "failed", "drain_timeout"): 1}
    assert side.outcomes() == expected


async def test_sigterm_drains_a_sidecar_process_with_a_stream_in_flight(
    tmp_path: Path, link: EngineLink
) -> None:
    """`sloguard sidecar` as a process: SIGTERM refuses new work, lets the stream finish, exits 0."""
    ports: dict[str, Any] = {
        "grpc_port": _free_port(),
        "http_port": _free_port(),
        "metrics_port": _free_port(),
    }
    config_path = tmp_path / "sidecar.json"
    config_path.write_text(json.dumps(sidecar_config(link.url, drain_grace_s=60.0, **ports)))
    command = ["-m", "sloguard", "sidecar", "--config", str(config_path), "--host", "127.0.0.1"]
    with (tmp_path / "sidecar.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *command, env={**os.environ, "PYTHONSAFEPATH": "1"}, stdout=log, stderr=log
        )
    http_url, metrics_url = (
        f"http://127.0.0.1:{ports['http_port']}",
        f"http://127.0.0.1:{ports['metrics_port']}",
    )
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_for(
                lambda: _status_is(session, f"{metrics_url}/readyz", 200), "the sidecar to be ready"
            )
            link.hold()
            running = await session.post(
                f"{http_url}/v1/completions", json=_completion(LONG_TOKENS, stream=True)
            )
            await _first_event(running)
            process.terminate()
            await _wait_for(
                lambda: _status_is(session, f"{metrics_url}/readyz", 503), "readiness to go false"
            )
            async with session.post(f"{http_url}/v1/completions", json=_completion(4)) as refused:
                assert refused.status == 503 and refused.headers["x-sloguard-reason"] == "draining"
            assert process.returncode is None  # still serving the stream in flight
            link.release()
            events = await _sse(running)
            running.close()
        assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "length"
        assert await asyncio.wait_for(process.wait(), WAIT_S) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _status_is(session: aiohttp.ClientSession, url: str, status: int) -> bool:
    with contextlib.suppress(aiohttp.ClientError):
        async with session.get(url) as response:
            return response.status == status
    return False


# ---- exactly once under a mix --------------------------------------------------------------------------


async def test_a_concurrent_mix_ends_every_request_exactly_once(side: SidecarHandle) -> None:
    url = f"{side.http_url}/v1/completions"

    async def streamed(tokens: int) -> None:
        assert (await _post_sse(side.http, url, _completion(tokens, stream=True)))[-1] == "[DONE]"

    async def unstreamed(tokens: int) -> None:
        async with side.http.post(url, json=_completion(tokens), headers={"x-slo-class": "batch"}) as r:
            assert r.status == 200

    async def leaves_early() -> None:
        response = await side.http.post(url, json=_completion(LONG_TOKENS, stream=True))
        await _first_event(response)
        response.close()

    async def over_grpc(tokens: int) -> None:
        async with grpc.aio.insecure_channel(side.grpc_target) as channel:
            request = pb.GenerateRequest(
                text="hi", max_tokens=tokens, sampling=pb.SamplingParams(ignore_eos=True)
            )
            assert sum([m.tokens async for m in stubs.sidecar(channel).Generate(request)]) == tokens

    async def invalid() -> None:
        async with side.http.post(url, json=_completion(0)) as r:
            assert r.status == 400

    await asyncio.gather(
        *(streamed(8) for _ in range(3)),
        *(unstreamed(5) for _ in range(3)),
        *(over_grpc(6) for _ in range(3)),
        *(invalid() for _ in range(2)),
        leaves_early(),
    )
    expected: Outcomes = {
        ("interactive", "completed", ""): 6,
        ("batch", "completed", ""): 3,
        ("interactive", "rejected", "invalid_request"): 2,
    }
    # the one that left may have been cancelled, or (a stalled client) have seen its 480 tokens through
    await _wait_for(lambda: _ended_at_least(side, 12), "every request to end")
    found = await outcomes_of(side)
    left = found.pop(("interactive", "cancelled", "client"), 0)
    found[("interactive", "completed", "")] = found.get(("interactive", "completed", ""), 0) - (1 - left)
    assert found == expected
