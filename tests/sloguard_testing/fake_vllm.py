"""A small fake of vLLM's OpenAI HTTP API for the sidecar's tests (a test double, not the simulator).

It streams SSE exactly as reference/vllm-behaviour.md §3 records: completions chunks carry the first
token in the first chunk and the last token together with `finish_reason`; chat starts with a role chunk;
`include_usage` adds a final `choices: []` usage chunk and `continuous_usage_stats` cumulative usage on
every chunk; `tokens_per_chunk` > 1 coalesces tokens as vLLM does under load (§3.9). Knobs let a test
hold generation, break the stream after N tokens, or report unhealthy; it records every request body and
counts streams that the client abandoned.
"""

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

FINGERPRINT = "vllm-0.32.0-fa4e0000"


@dataclass
class FakeVllm:
    token_interval_s: float = 0.0
    tokens_per_chunk: int = 1
    fail_after_tokens: int | None = None  # close the connection abruptly after this many tokens
    refuse_with: int | None = None  # answer every generation request with this error status
    abort_after_tokens: int | None = None  # end with finish_reason "abort" after this many (§3.6)
    healthy: bool = True
    model: str = "tiny"
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    peers: list[Any] = field(default_factory=list)  # client address per request: connection reuse
    aborted: int = 0
    finished: int = 0
    active: int = 0
    peak_active: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        self.release.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _health(self, _: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 503)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    async def _serve(self, request: web.Request, *, chat: bool) -> web.StreamResponse:  # noqa: PLR0912
        try:
            body = json.loads(await request.read())
        except json.JSONDecodeError:
            return _error(400, "JSON decode error", "Bad Request")
        self.requests.append(body)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        self.peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        if self.refuse_with is not None:
            return _error(
                self.refuse_with, "This model's maximum context length is 512 tokens.", "BadRequestError"
            )
        max_tokens = (
            body.get("max_completion_tokens", body.get("max_tokens")) if chat else body.get("max_tokens", 16)
        )
        max_tokens = 32 if max_tokens is None else max_tokens
        if max_tokens < 1:
            return _error(400, f"max_tokens must be at least 1, got {max_tokens}.", "BadRequestError")
        prompt_tokens = 15 if chat else _prompt_tokens(body.get("prompt"))
        rid = request.headers.get("X-Request-Id") or uuid.uuid4().hex[:16]
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{rid}"
        if not body.get("stream"):
            return await self._unary(
                body, chat=chat, ident=ident, max_tokens=max_tokens, prompt_tokens=prompt_tokens
            )
        options = body.get("stream_options") or {}
        include = "stream_options" in body and options.get("include_usage", True)
        continuous = include and options.get("continuous_usage_stats", False)
        sse_headers = {"content-type": "text/event-stream; charset=utf-8"}
        response = web.StreamResponse(headers=sse_headers)
        await response.prepare(request)
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        try:
            base: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk" if chat else "text_completion",
            }
            base |= {"created": int(time.time()), "model": self.model}
            if chat:
                role: dict[str, Any] = {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                }
                if continuous:
                    role["usage"] = _usage(prompt_tokens, 0) | {"completion_tokens_details": None}
                await _send(response, role)
            sent = 0
            while sent < max_tokens:
                await self.release.wait()
                if self.token_interval_s:
                    await asyncio.sleep(self.token_interval_s)
                n = min(self.tokens_per_chunk, max_tokens - sent)
                if self.fail_after_tokens is not None and sent + n > self.fail_after_tokens:
                    assert request.transport is not None
                    request.transport.close()  # the engine died mid-stream
                    return response
                aborting = self.abort_after_tokens is not None and sent >= self.abort_after_tokens
                if aborting:
                    n, max_tokens = 0, sent  # vLLM's abort chunk: empty text, finish_reason "abort"
                sent += n
                text = "".join(f" t{i}" for i in range(sent - n, sent))
                finish = "abort" if aborting else "length" if sent == max_tokens else None
                if chat:
                    choice: dict[str, Any] = {
                        "index": 0,
                        "delta": {"content": text},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                    if finish:
                        choice["stop_reason"] = None
                else:
                    choice = {
                        "index": 0,
                        "text": text,
                        "logprobs": None,
                        "finish_reason": finish,
                        "stop_reason": None,
                    }
                chunk: dict[str, Any] = {**base, "choices": [choice]}
                if continuous:
                    chunk["usage"] = _usage(prompt_tokens, sent) | (
                        {"completion_tokens_details": None} if chat else {}
                    )
                if finish and not include:
                    chunk["system_fingerprint"] = FINGERPRINT
                await _send(response, chunk)
            if include:
                await _send(
                    response,
                    {
                        **base,
                        "choices": [],
                        "usage": _usage(prompt_tokens, sent),
                        "system_fingerprint": FINGERPRINT,
                    },
                )
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            self.finished += 1
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            self.aborted += 1
            raise
        finally:
            self.active -= 1

    async def _unary(
        self, body: dict[str, Any], *, chat: bool, ident: str, max_tokens: int, prompt_tokens: int
    ) -> web.Response:
        text = "".join(f" t{i}" for i in range(max_tokens))
        choice: dict[str, Any] = (
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
            if chat
            else {"index": 0, "text": text, "finish_reason": "length"}
        )
        self.finished += 1
        return web.json_response(
            {
                "id": ident,
                "object": "chat.completion" if chat else "text_completion",
                "model": self.model,
                "choices": [choice],
                "usage": _usage(prompt_tokens, max_tokens),
            }
        )


def _prompt_tokens(prompt: Any) -> int:
    if isinstance(prompt, list):
        return len(prompt)
    return max(1, len(str(prompt or "").split()))


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }


async def _send(response: web.StreamResponse, payload: dict[str, Any]) -> None:
    await response.write(b"data: " + json.dumps(payload).encode() + b"\n\n")


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": status}}, status=status
    )
