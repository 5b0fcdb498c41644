"""The OpenAI-compatible HTTP front over real sockets, in front of the fake vLLM."""

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sloguard_testing.fake_vllm import FakeVllm
from sloguard_testing.sidecar_harness import running_sidecar, sse_payloads, wait_until

COMPLETION = {"model": "tiny", "prompt": "the quick brown fox", "max_tokens": 5, "stream": True}
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}


@pytest.mark.parametrize(
    ("stream_options", "usage_chunks", "final_usage"),
    [
        (None, 0, False),
        ({"include_usage": True}, 1, True),
        ({"include_usage": True, "continuous_usage_stats": True}, 6, True),
    ],
)
async def test_streamed_completion_relays_tokens_and_restores_the_clients_usage_wish(
    tmp_path: Path, stream_options: dict[str, bool] | None, usage_chunks: int, final_usage: bool
) -> None:
    body: dict[str, Any] = dict(COMPLETION)
    if stream_options is not None:
        body["stream_options"] = stream_options
    async with running_sidecar(tmp_path) as h:
        async with h.http.post(f"{h.http_url}/v1/completions", json=body) as resp:
            assert resp.status == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            payloads = sse_payloads(await resp.read())
        assert payloads[-1] == "[DONE]"
        chunks = payloads[:-1]
        text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
        assert text == " t0 t1 t2 t3 t4"
        assert sum(1 for c in chunks if "usage" in c) == usage_chunks
        assert (chunks[-1]["choices"] == []) is final_usage
        upstream = h.engine.requests[-1]
        assert upstream["stream"] is True
        assert upstream["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
        assert "priority" not in upstream  # the engine runs fcfs
        assert (
            h.sample("sloguard_requests_total", slo_class="interactive", outcome="completed", reason="") == 1
        )


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
async def test_non_streamed_requests_are_assembled_from_the_upstream_stream(
    tmp_path: Path, endpoint: str
) -> None:
    body = {**(COMPLETION if endpoint == "completions" else CHAT), "stream": False}
    path = "/v1/completions" if endpoint == "completions" else "/v1/chat/completions"
    async with running_sidecar(tmp_path) as h:
        async with h.http.post(h.http_url + path, json=body) as resp:
            assert resp.status == 200
            answer = await resp.json()
        choice = answer["choices"][0]
        expected = " t0 t1 t2 t3 t4" if endpoint == "completions" else " t0 t1 t2 t3"
        assert (choice["text"] if endpoint == "completions" else choice["message"]["content"]) == expected
        assert choice["finish_reason"] == "length"
        assert answer["usage"]["completion_tokens"] == body["max_tokens"]
        assert h.engine.requests[-1]["stream"] is True


async def test_streamed_chat_keeps_the_role_chunk(tmp_path: Path) -> None:
    async with running_sidecar(tmp_path) as h:
        async with h.http.post(f"{h.http_url}/v1/chat/completions", json=CHAT) as resp:
            payloads = sse_payloads(await resp.read())
        assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert "".join(p["choices"][0]["delta"].get("content", "") for p in payloads[1:-1]) == " t0 t1 t2 t3"


async def test_priority_is_stamped_with_vllm_polarity_when_the_engine_schedules_by_priority(
    tmp_path: Path,
) -> None:
    async with running_sidecar(tmp_path, engine_policy="priority", policy={"name": "sloguard"}) as h:
        stamped = {}
        for slo_class in ("interactive", "batch"):  # class priorities 10 and 0 (higher = more important)
            body = {**COMPLETION, "priority": 99}  # a client-sent priority never reaches the engine
            headers = {"x-slo-class": slo_class}
            async with h.http.post(f"{h.http_url}/v1/completions", json=body, headers=headers) as r:
                assert r.status == 200
                await r.read()
            stamped[slo_class] = h.engine.requests[-1]["priority"]
        assert stamped["interactive"] < stamped["batch"]  # vLLM: lower = earlier
        assert 99 not in stamped.values()


async def test_no_priority_reaches_an_fcfs_engine(tmp_path: Path) -> None:
    async with running_sidecar(tmp_path, policy={"name": "sloguard"}) as h:
        body = {**COMPLETION, "priority": 99}
        async with h.http.post(
            f"{h.http_url}/v1/completions", json=body, headers={"x-slo-class": "interactive"}
        ) as r:
            await r.read()
        assert "priority" not in h.engine.requests[-1]


BAD_REQUESTS = [
    ("malformed json", b'{"model":"tiny","prompt":"hi",', {}, 400, "invalid_request"),
    ("json array", b"[1, 2]", {}, 400, "invalid_request"),
    ("unknown class", json.dumps(COMPLETION).encode(), {"x-slo-class": "gold"}, 400, "unknown_class"),
    (
        "negative max_tokens",
        json.dumps({**COMPLETION, "max_tokens": -1}).encode(),
        {},
        400,
        "invalid_request",
    ),
    ("huge max_tokens", json.dumps({**COMPLETION, "max_tokens": 10**9}).encode(), {}, 400, "invalid_request"),
    ("string max_tokens", json.dumps({**COMPLETION, "max_tokens": "5"}).encode(), {}, 400, "invalid_request"),
    (
        "oversized prompt",
        json.dumps({**COMPLETION, "prompt": "x" * 200_000}).encode(),
        {},
        400,
        "invalid_request",
    ),
    ("two choices", json.dumps({**COMPLETION, "n": 2}).encode(), {}, 400, "invalid_request"),
    ("no prompt", json.dumps({"model": "tiny", "max_tokens": 3}).encode(), {}, 400, "invalid_request"),
    (
        "negative ttft header",
        json.dumps(COMPLETION).encode(),
        {"x-slo-ttft-ms": "-5"},
        400,
        "invalid_request",
    ),
    (
        "garbage tpot header",
        json.dumps(COMPLETION).encode(),
        {"x-llm-d-slo-tpot-ms": "soon"},
        400,
        "invalid_request",
    ),
]


@pytest.mark.parametrize(
    ("case", "raw", "headers", "status", "reason"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
async def test_bad_input_gets_a_clear_error_and_is_counted_once(  # noqa: PLR0917 (parametrized)
    tmp_path: Path, case: str, raw: bytes, headers: dict[str, str], status: int, reason: str
) -> None:
    async with running_sidecar(tmp_path, limits={"max_prompt_tokens": 1000}) as h:
        hdrs = {"content-type": "application/json", **headers}
        async with h.http.post(f"{h.http_url}/v1/completions", data=raw, headers=hdrs) as resp:
            assert resp.status == status, case
            body = await resp.json()
            assert resp.headers["x-sloguard-reason"] == reason
            assert "Retry-After" not in resp.headers  # retrying the same bad request cannot help
        assert (
            body["error"]["code"] == status and body["error"]["reason"] == reason and body["error"]["message"]
        )
        assert h.engine.requests == []
        assert [(o, r) for (_, o, r) in h.outcomes()] == [("rejected", reason)]
        assert h.total_ended() == 1


async def test_queue_full_is_429_with_retry_after_and_nothing_is_lost(tmp_path: Path) -> None:
    fake = FakeVllm()
    fake.release.clear()  # the engine holds its tokens
    limits = {"max_queue_depth": 1, "min_in_flight": 1, "max_in_flight": 1}
    async with running_sidecar(tmp_path, fake, limits=limits) as h:
        body = {**COMPLETION, "stream": False}
        first = asyncio.create_task(h.http.post(f"{h.http_url}/v1/completions", json=body))
        await wait_until(lambda: h.engine.active == 1, what="first request in the engine")
        second = asyncio.create_task(h.http.post(f"{h.http_url}/v1/completions", json=body))
        await wait_until(lambda: h.sidecar.lifecycle.queued == 1, what="second request queued")
        async with h.http.post(
            f"{h.http_url}/v1/completions", json=body, headers={"x-slo-class": "batch"}
        ) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "1"
            assert resp.headers["x-sloguard-reason"] == "queue_full"
        assert h.sample("sloguard_queue_depth", slo_class="interactive") == 1
        fake.release.set()
        for task in (first, second):
            response = await task
            assert response.status == 200
            response.release()
        assert h.outcomes() == {
            ("interactive", "completed", ""): 2,
            ("batch", "rejected", "queue_full"): 1,
        }


async def test_client_disconnect_mid_stream_aborts_upstream_and_counts_cancelled(tmp_path: Path) -> None:
    fake = FakeVllm(token_interval_s=0.01)
    async with running_sidecar(tmp_path, fake) as h:
        body = {**COMPLETION, "max_tokens": 5000}
        resp = await h.http.post(f"{h.http_url}/v1/completions", json=body)
        await resp.content.readline()  # the first data line arrived
        resp.close()  # the client leaves
        await wait_until(lambda: fake.aborted == 1, what="upstream abort")
        await wait_until(lambda: h.total_ended() == 1, what="outcome counted")
        assert h.outcomes() == {("interactive", "cancelled", "client"): 1}
        assert h.sidecar.lifecycle.in_flight == 0


async def test_explicit_targets_and_llm_d_headers_are_accepted(tmp_path: Path) -> None:
    async with running_sidecar(tmp_path) as h:
        headers = {
            "x-llm-d-slo-ttft-ms": "900",
            "x-llm-d-slo-tpot-ms": "50",
            "x-gateway-inference-objective": "batch",
        }
        async with h.http.post(f"{h.http_url}/v1/completions", json=COMPLETION, headers=headers) as resp:
            assert resp.status == 200
            await resp.read()
        assert h.sample("sloguard_requests_total", slo_class="batch", outcome="completed", reason="") == 1


async def test_a_client_leaving_while_queued_is_cancelled_and_never_reaches_the_engine(
    tmp_path: Path,
) -> None:
    fake = FakeVllm()
    fake.release.clear()
    limits = {"max_queue_depth": 4, "min_in_flight": 1, "max_in_flight": 1}
    async with running_sidecar(tmp_path, fake, limits=limits) as h:
        running = asyncio.create_task(
            h.http.post(f"{h.http_url}/v1/completions", json={**COMPLETION, "stream": False})
        )
        await wait_until(lambda: fake.active == 1, what="first in the engine")
        queued = asyncio.create_task(h.http.post(f"{h.http_url}/v1/completions", json=COMPLETION))
        await wait_until(lambda: h.sidecar.lifecycle.queued == 1, what="second queued")
        queued.cancel()  # the client gives up and closes its connection
        await wait_until(lambda: h.total_ended() == 1, what="queued request counted")
        assert h.outcomes() == {("interactive", "cancelled", "client"): 1}
        assert h.sample("sloguard_queue_depth", slo_class="interactive") == 0
        fake.release.set()
        (await running).release()
        await wait_until(lambda: h.total_ended() == 2, what="first completes")
        assert len(fake.requests) == 1


async def test_models_are_the_engines(tmp_path: Path) -> None:
    async with running_sidecar(tmp_path) as h:
        async with h.http.get(f"{h.http_url}/v1/models") as resp:
            assert resp.status == 200
            assert [m["id"] for m in (await resp.json())["data"]] == ["tiny"]
        await h.engine.stop()
        async with h.http.get(f"{h.http_url}/v1/models") as resp:
            assert resp.status == 503


async def test_upstream_connections_are_reused_after_a_complete_stream(tmp_path: Path) -> None:
    # No periodic health probe: a probe borrows the pooled connection, and a request sent while it is out
    # rightly opens a second one (seen in CI: peers [A, A, B]).
    async with running_sidecar(tmp_path, health_interval_s=3600.0) as h:
        for _ in range(3):
            async with h.http.post(f"{h.http_url}/v1/completions", json=COMPLETION) as resp:
                assert resp.status == 200
                await resp.read()
        assert len(h.engine.peers) == 3 and len(set(h.engine.peers)) == 1


@pytest.mark.parametrize(
    ("engine_status", "status", "outcome", "reason"),
    [(400, 400, "rejected", "invalid_request"), (500, 502, "failed", "engine_error")],
)
async def test_an_engine_refusal_reaches_the_client_and_is_counted(
    tmp_path: Path, engine_status: int, status: int, outcome: str, reason: str
) -> None:
    async with running_sidecar(tmp_path, FakeVllm(refuse_with=engine_status)) as h:
        async with h.http.post(f"{h.http_url}/v1/completions", json=COMPLETION) as resp:
            assert resp.status == status
            body = await resp.json()
        assert "maximum context length" in body["error"]["message"]
        assert h.outcomes() == {("interactive", outcome, reason): 1}
        assert h.sidecar.lifecycle.engine_up  # the engine answered: it is not down
