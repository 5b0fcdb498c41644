"""The OpenAI-compatible HTTP front: POST /v1/completions and /v1/chat/completions, streamed or not.

Existing OpenAI clients work unchanged; the SLO class comes from `x-slo-class` (or the GAIE/llm-d
objective headers), explicit targets from `x-slo-ttft-ms` / `x-slo-tpot-ms` / `x-slo-deadline-ms` (and the
`x-llm-d-slo-*` spellings). Requests go through `Lifecycle.generate_batches`; rejections become 4xx/5xx
with `Retry-After` and `x-sloguard-reason` via sidecar/errors.py. Bad input is refused (400) and counted,
never a 500: JSON nested deeper than MAX_JSON_DEPTH included. Unknown paths and methods answer as vLLM
does (FastAPI's `{"detail": ...}` bodies, reference/vllm-behaviour.md §5). A streaming client that leaves
mid-stream ends its request (counted as cancelled by the lifecycle) without an error log.
"""

import contextlib
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from sloguard.api.errors import RejectionReason
from sloguard.sidecar.engine_client import Endpoint
from sloguard.sidecar.errors import (
    REASON_HEADER,
    RequestFailed,
    RequestRejected,
    http_headers,
    http_status_of,
    openai_error_body,
)
from sloguard.sidecar.hop_timing import Hop, HopTimer
from sloguard.sidecar.lifecycle import Lifecycle, ServeRequest, TokenEvent
from sloguard.sidecar.relay import Assembler, StreamRelay, UsageWish

log = logging.getLogger(__name__)

CLASS_HEADERS = ("x-slo-class", "x-gateway-inference-objective", "x-llm-d-inference-objective")
TTFT_HEADERS = ("x-slo-ttft-ms", "x-llm-d-slo-ttft-ms")
TPOT_HEADERS = ("x-slo-tpot-ms", "x-llm-d-slo-tpot-ms")
DEADLINE_HEADERS = ("x-slo-deadline-ms", "x-llm-d-slo-deadline-ms")
BYTES_PER_TOKEN_ESTIMATE = 4  # prompt tokens are estimated before the engine counts them exactly
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # vLLM's default (reference/vllm-behaviour.md §5)
MAX_JSON_DEPTH = 128  # nesting of objects and arrays in a body; deeper would break json's C recursion


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether objects/arrays nest more than `limit` deep (iterative: no recursion to run out of)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


@web.middleware
async def _routing_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """404 and 405 as vLLM answers them (FastAPI's bodies, `allow` header), not aiohttp's plain text."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        allow = ", ".join(sorted(exc.allowed_methods))
        return web.json_response({"detail": "Method Not Allowed"}, status=405, headers={"allow": allow})
    except web.HTTPNotFound:
        return web.json_response({"detail": "Not Found"}, status=404)


def _first_header(request: web.Request, names: tuple[str, ...]) -> str | None:
    return next((request.headers[n] for n in names if n in request.headers), None)


def _ms_header_s(request: web.Request, names: tuple[str, ...]) -> float | None:
    raw = _first_header(request, names)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise RequestRejected(
            RejectionReason.INVALID_REQUEST, f"{names[0]} must be a number, got {raw!r}"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise RequestRejected(RejectionReason.INVALID_REQUEST, f"{names[0]} must be positive, got {raw!r}")
    return value / 1000.0


def _prompt_of(endpoint: Endpoint, body: dict[str, Any]) -> tuple[str | None, int]:
    """The prompt text (for the predictor) and an estimate of its token count."""
    if endpoint == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestRejected(RejectionReason.INVALID_REQUEST, "messages must be a non-empty list")
        parts = []
        for message in messages:
            if not isinstance(message, dict):
                raise RequestRejected(RejectionReason.INVALID_REQUEST, "each message must be an object")
            content = message.get("content")
            parts.append(content if isinstance(content, str) else json.dumps(content))
        text = "\n".join(parts)
        return text, math.ceil(len(text.encode()) / BYTES_PER_TOKEN_ESTIMATE)
    prompt = body.get("prompt")
    if isinstance(prompt, str) and prompt:
        return prompt, math.ceil(len(prompt.encode()) / BYTES_PER_TOKEN_ESTIMATE)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return None, len(prompt)
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str) and prompt[0]:
        return prompt[0], math.ceil(len(prompt[0].encode()) / BYTES_PER_TOKEN_ESTIMATE)
    raise RequestRejected(
        RejectionReason.INVALID_REQUEST, "prompt must be a non-empty string or list of token ids (one prompt)"
    )


def _max_tokens_of(endpoint: Endpoint, body: dict[str, Any], ceiling: int) -> int:
    if endpoint == "chat":
        value = body.get("max_completion_tokens", body.get("max_tokens"))
        default = ceiling  # vLLM runs chat to the context length when unset
    else:
        value = body.get("max_tokens")
        default = COMPLETIONS_DEFAULT_MAX_TOKENS
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestRejected(
            RejectionReason.INVALID_REQUEST, f"max_tokens must be an integer, got {value!r}"
        )
    return value


def _error(status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    all_headers = {REASON_HEADER: reason, **(headers or {})}
    return web.json_response(openai_error_body(message, status, reason), status=status, headers=all_headers)


def _rejection(error: RequestRejected) -> web.Response:
    return _error(http_status_of(error.reason), error.reason.value, error.message, http_headers(error))


class HttpFront:
    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    def app(self) -> web.Application:
        limits = self.lifecycle.config.limits
        max_body = limits.max_prompt_tokens * 16 + (1 << 20)
        app = web.Application(client_max_size=max_body, middlewares=[_routing_errors])
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        return app

    async def models(self, _: web.Request) -> web.Response:
        """The engine's model list, so OpenAI clients that look it up first work unchanged."""
        status, body = await self.lifecycle.engine.get_json("/v1/models")
        if status is None:
            return _error(503, RejectionReason.ENGINE_UNAVAILABLE.value, "the engine is not reachable")
        return web.json_response(body, status=status)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "completions")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "chat")

    async def _serve(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        hops = HopTimer()
        try:
            body = await self._body(request)
            serve = self._serve_request(request, endpoint, body)
        except RequestRejected as error:
            self.lifecycle.count_unparsed(error.reason)
            return _rejection(error)
        serve.hops = hops
        hops.mark(Hop.FRONT_PARSE)
        batches = self.lifecycle.generate_batches(serve)
        async with contextlib.aclosing(batches):
            try:
                first = await anext(batches, None)
            except RequestRejected as error:
                return _rejection(error)
            except RequestFailed as error:
                return _error(error.http_status, error.reason, str(error))
            if body.get("stream") is True:
                return await self._stream(request, body, first, batches, hops)
            assembler = Assembler(endpoint)
            try:
                for event in first or ():
                    assembler.add(event.chunk)
                async for batch in batches:
                    for event in batch:
                        assembler.add(event.chunk)
            except RequestFailed as error:
                return _error(error.http_status, error.reason, str(error))
            return web.json_response(assembler.response())

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise RequestRejected(RejectionReason.INVALID_REQUEST, "request body too large") from None
        too_deep = f"the JSON body nests objects and arrays more than {MAX_JSON_DEPTH} deep"
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RequestRejected(RejectionReason.INVALID_REQUEST, f"malformed JSON body: {error}") from None
        except RecursionError:  # nested far too deep for the parser itself
            raise RequestRejected(RejectionReason.INVALID_REQUEST, too_deep) from None
        if not isinstance(body, dict):
            raise RequestRejected(RejectionReason.INVALID_REQUEST, "the JSON body must be an object")
        # cheap first: fewer openers than the limit cannot nest deeper (a token-id prompt has one)
        if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _nested_deeper_than(body, MAX_JSON_DEPTH):
            raise RequestRejected(RejectionReason.INVALID_REQUEST, too_deep)
        return body

    def _serve_request(self, request: web.Request, endpoint: Endpoint, body: dict[str, Any]) -> ServeRequest:
        if body.get("n", 1) != 1 or body.get("best_of", 1) != 1:
            raise RequestRejected(
                RejectionReason.INVALID_REQUEST, "only n=1 (one choice per request) is supported"
            )
        prompt_text, prompt_tokens = _prompt_of(endpoint, body)
        ceiling = self.lifecycle.config.limits.max_output_tokens
        return ServeRequest(
            endpoint=endpoint,
            body=body,
            slo_class=_first_header(request, CLASS_HEADERS),
            request_id=request.headers.get("x-request-id") or uuid.uuid4().hex,
            ttft_s=_ms_header_s(request, TTFT_HEADERS),
            tpot_s=_ms_header_s(request, TPOT_HEADERS),
            deadline_s=_ms_header_s(request, DEADLINE_HEADERS),
            prompt_text=prompt_text,
            prompt_tokens=prompt_tokens,
            max_tokens=_max_tokens_of(endpoint, body, ceiling),
        )

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        first: list[TokenEvent] | None,
        batches: AsyncIterator[list[TokenEvent]],
        hops: HopTimer,
    ) -> web.StreamResponse:
        relay = StreamRelay(UsageWish.of(body))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        try:
            await response.prepare(request)
            try:
                if first is not None:
                    await _write_events(response, relay, first)
                    hops.mark(Hop.CLIENT_FIRST_WRITE)
                    self.lifecycle.metrics.observe_hops(hops)
                async for batch in batches:
                    await _write_events(response, relay, batch)
                await _write_chunks(response, relay.flush())
            except RequestFailed as error:
                error_body = openai_error_body(str(error), error.http_status, error.reason)
                await response.write(f"data: {json.dumps(error_body)}\n\n".encode())
            await response.write_eof(b"data: [DONE]\n\n")  # with the stream's end: one send, not two
        except ConnectionResetError:  # aiohttp's ClientConnectionResetError: the client has just left
            log.debug("streaming client of %s left; its request ends as cancelled", request.path)
        return response


async def _write_events(response: web.StreamResponse, relay: StreamRelay, events: list[TokenEvent]) -> None:
    """Relay one engine read's chunks as one write (one syscall, one loop hop)."""
    await _write_chunks(response, [data for event in events for data in relay.feed(event.chunk)])


async def _write_chunks(response: web.StreamResponse, chunks: list[bytes]) -> None:
    if chunks:
        await response.write(b"".join(b"data: " + data + b"\n\n" for data in chunks))
