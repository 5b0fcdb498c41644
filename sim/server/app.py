"""The vLLM-compatible OpenAI HTTP server over the simulated engine (`sloguard sim serve`).

Routes (vLLM 0.32 subset, wire formats from shared/reference/vllm-behaviour.md §3–§7):
  POST /v1/completions, POST /v1/chat/completions   streaming (SSE, `data: [DONE]`) and not;
       max_tokens / max_completion_tokens, min_tokens, ignore_eos, priority (body or X-Vllm-Priority,
       used only with --scheduling-policy priority), stream_options.include_usage and
       continuous_usage_stats, stream_interval (tokens per chunk; the first and the last at once),
       X-Request-Id; vLLM-style 400/404 errors. Prompts reach the engine as
       token ids (text through a deterministic word-level stand-in tokenizer), so prompts sharing a
       prefix hit its prefix cache (on unless --no-enable-prefix-caching, as in vLLM).
  GET /v1/models, /health, /ping, /version, /metrics (vLLM's families, names, labels and buckets).
Streams send their headers on acceptance and the first `data:` line with the first token. A client
that disconnects aborts its request, which frees its KV blocks. Generated text is deterministic filler.
"""

import asyncio
import contextlib
import functools
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sloguard.api.openai_layout import unary_answer, unary_usage
from sloguard.sim.engine import Engine, EngineConfig, Finished, SimRequest
from sloguard.sim.profiles import load_profile
from sloguard.sim.server.driver import EngineDriver, RequestHandle
from sloguard.sim.server.metrics import VllmMetrics
from sloguard.sim.server.protocol import (
    ApiError,
    GenerationParams,
    filler_text,
    generation_params,
    parse_json_body,
)

log = logging.getLogger(__name__)
VLLM_VERSION = "0.32.0"
_compact = functools.partial(json.dumps, separators=(",", ":"))
DRIVER_KEY = web.AppKey("driver", EngineDriver)
OPTIONS_KEY: "web.AppKey[ServerOptions]" = web.AppKey("options")
TASK_KEY: "web.AppKey[asyncio.Task[None]]" = web.AppKey("driver_task")


@dataclass(frozen=True)
class ServerOptions:
    profile: str
    port: int
    host: str = "127.0.0.1"
    time_scale: float = 1.0
    scheduling_policy: str = "fcfs"
    max_num_seqs: int = 256
    num_gpu_blocks: int | None = None
    block_size: int | None = None
    max_num_batched_tokens: int = 8192
    max_model_len: int | None = None
    served_model_name: str | None = None
    seed: int = 0
    mean_output_tokens: float = 256.0
    enable_prefix_caching: bool = True


def _json(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers, dumps=_compact)


def build_app(options: ServerOptions) -> web.Application:
    profile = load_profile(options.profile)
    if options.scheduling_policy not in ("fcfs", "priority"):
        raise ValueError(f"unknown scheduling policy {options.scheduling_policy!r}")
    config = EngineConfig(
        num_gpu_blocks=options.num_gpu_blocks or profile.default_num_gpu_blocks,
        block_size=options.block_size or profile.block_size,
        max_num_seqs=options.max_num_seqs,
        max_num_batched_tokens=options.max_num_batched_tokens,
        max_model_len=options.max_model_len or profile.max_model_len,
        scheduling_policy="priority" if options.scheduling_policy == "priority" else "fcfs",
        seed=options.seed,
        mean_output_tokens=options.mean_output_tokens,
        prefix_caching=options.enable_prefix_caching,
    )
    model_name = options.served_model_name or profile.model
    cache_info = {
        "block_size": str(config.block_size),
        "num_gpu_blocks": str(config.num_gpu_blocks),
        "num_gpu_blocks_override": str(options.num_gpu_blocks),
        # vLLM reports all blocks here (5 blocks of 128 -> "640"), although one is its reserved null block
        "kv_cache_size_tokens": str(config.num_gpu_blocks * config.block_size),
        "enable_prefix_caching": str(config.prefix_caching),
        "cache_dtype": "auto",
        "sliding_window": "None",
    }
    metrics = VllmMetrics(model_name, config.max_model_len, cache_info)
    engine = Engine(config, profile.step_time())
    app = web.Application(middlewares=[_json_errors])
    app[OPTIONS_KEY] = ServerOptions(**{**options.__dict__, "served_model_name": model_name})
    app[DRIVER_KEY] = EngineDriver(engine, metrics, time_scale=options.time_scale)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _empty_ok)
    app.router.add_get("/ping", _empty_ok)
    app.router.add_get("/version", _version)
    app.router.add_get("/metrics", _metrics)
    app.cleanup_ctx.append(_driver_task)
    return app


async def _driver_task(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[DRIVER_KEY].run())
    app[TASK_KEY] = task
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """FastAPI's bodies for routing errors, and ApiError bodies."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _json(exc.body, status=exc.status)
    except web.HTTPMethodNotAllowed as exc:
        return _json(
            {"detail": "Method Not Allowed"},
            status=405,
            headers={"allow": ", ".join(sorted(exc.allowed_methods))},
        )
    except web.HTTPNotFound:
        return _json({"detail": "Not Found"}, status=404)


async def _empty_ok(_: web.Request) -> web.Response:
    return web.Response(status=200)


async def _version(_: web.Request) -> web.Response:
    return _json({"version": VLLM_VERSION})


async def _models(request: web.Request) -> web.Response:
    options = request.app[OPTIONS_KEY]
    driver = request.app[DRIVER_KEY]
    name = options.served_model_name
    created = int(time.time())
    return _json(
        {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "vllm",
                    "root": f"sloguard-sim:{options.profile}",
                    "parent": None,
                    "max_model_len": driver.engine.config.max_model_len,
                    "permission": [
                        {
                            "id": f"modelperm-{secrets.token_hex(8)}",
                            "object": "model_permission",
                            "created": created,
                            "allow_create_engine": False,
                            "allow_sampling": True,
                            "allow_logprobs": True,
                            "allow_search_indices": False,
                            "allow_view": True,
                            "allow_fine_tuning": False,
                            "organization": "*",
                            "group": None,
                            "is_blocking": False,
                        }
                    ],
                }
            ],
        }
    )


async def _metrics(request: web.Request) -> web.Response:
    driver = request.app[DRIVER_KEY]
    driver.refresh_gauges()
    body = generate_latest(driver.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=False)


async def _chat(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=True)


async def _generate(request: web.Request, *, chat: bool) -> web.StreamResponse:
    options = request.app[OPTIONS_KEY]
    driver = request.app[DRIVER_KEY]
    body = parse_json_body(request.content_type, await request.read())
    model = body.get("model")
    if model is not None and model != options.served_model_name:
        raise ApiError(
            404,
            f"The model `{model}` does not exist. Valid aliases: {options.served_model_name}.",
            "NotFoundError",
            "model",
        )
    params = generation_params(
        body,
        chat=chat,
        max_model_len=driver.engine.config.max_model_len,
        header_priority=request.headers.get("X-Vllm-Priority"),
    )
    client_id = request.headers.get("X-Request-Id") or secrets.token_hex(8)
    response_id = f"{'chatcmpl' if chat else 'cmpl'}-{client_id}"
    engine_id = response_id if chat else f"{response_id}-0"
    sim_request = SimRequest(
        engine_id,
        prompt_tokens=params.prompt_tokens,
        max_tokens=params.max_tokens,
        min_tokens=params.min_tokens,
        ignore_eos=params.ignore_eos,
        priority=params.priority if options.scheduling_policy == "priority" else 0,
        prompt_token_ids=params.prompt_token_ids,
    )
    try:
        handle = driver.submit(sim_request, params.max_tokens)
    except ValueError as exc:
        raise ApiError(400, str(exc), "BadRequestError", None) from None
    try:
        if params.stream:
            return await _stream(
                request, handle, params, response_id, options.served_model_name or "", chat=chat
            )
        return await _unary(handle, params, response_id, options.served_model_name or "", chat=chat)
    finally:
        if handle.finished is None:  # the client went away (or the handler failed): free the blocks
            driver.abort(engine_id)


async def _wait_change(handle: RequestHandle) -> None:
    await handle.changed.wait()
    handle.changed.clear()


def _fingerprint() -> str:
    return f"vllm-{VLLM_VERSION}-simulate"


def _usage(params: GenerationParams, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": params.prompt_tokens,
        "total_tokens": params.prompt_tokens + completion,
        "completion_tokens": completion,
    }


async def _unary(
    handle: RequestHandle, params: GenerationParams, response_id: str, model: str, *, chat: bool
) -> web.Response:
    while handle.finished is None:
        await _wait_change(handle)
    done: Finished = handle.finished
    text = filler_text(0, done.output_tokens)
    usage = unary_usage(params.prompt_tokens, done.output_tokens)
    return _json(  # field for field what vLLM 0.32 returns (compared against a live server)
        unary_answer(
            chat=chat,
            response_id=response_id,
            created=int(time.time()),
            model=model,
            text=text,
            finish_reason=done.finish_reason,
            stop_reason=None,
            fingerprint=_fingerprint(),
            usage=usage,
        )
    )


async def _stream(
    request: web.Request,
    handle: RequestHandle,
    params: GenerationParams,
    response_id: str,
    model: str,
    *,
    chat: bool,
) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream; charset=utf-8"})
    response.enable_chunked_encoding()
    await response.prepare(request)  # headers on acceptance, even while queued (vllm-behaviour §2.1)
    created = int(time.time())
    base = {
        "id": response_id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model,
    }
    sent = 0

    async def send(payload: dict[str, Any]) -> None:
        await response.write(f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode())

    while True:
        done = handle.finished
        have = done.output_tokens if done is not None else handle.generated
        if done is None and params.stream_interval > 1 and have > 0:
            # vLLM's per-request stream_interval: outputs end at tokens 1, 1 + N, 1 + 2N, ... and at the end
            # (a reader that falls behind gets several at once, still ending there)
            have = 1 + (have - 1) // params.stream_interval * params.stream_interval
        if have > sent:
            if chat and sent == 0:
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
                    "prompt_token_ids": None,
                    "prompt_text": None,
                }
                if params.continuous_usage:
                    role["usage"] = {**_usage(params, 0), "completion_tokens_details": None}
                await send(role)
            final = done is not None
            chunk = _token_chunk(
                base, params, sent, have, done.finish_reason if final and done else None, chat=chat
            )
            if final and not params.include_usage:
                chunk["system_fingerprint"] = _fingerprint()
            await send(chunk)
            sent = have
        if done is not None:
            break
        await _wait_change(handle)
    if params.include_usage:
        await send(
            {**base, "choices": [], "usage": _usage(params, sent), "system_fingerprint": _fingerprint()}
        )
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _token_chunk(
    base: dict[str, Any],
    params: GenerationParams,
    start: int,
    end: int,
    finish_reason: str | None,
    *,
    chat: bool,
) -> dict[str, Any]:
    text = filler_text(start, end)
    if chat:
        choice: dict[str, Any] = {
            "index": 0,
            "delta": {"content": text},
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        if finish_reason is not None:
            choice["stop_reason"] = None
        choice["token_ids"] = None
    else:
        choice = {
            "index": 0,
            "text": text,
            "logprobs": None,
            "finish_reason": finish_reason,
            "stop_reason": None,
            "prompt_token_ids": None,
            "token_ids": None,
        }
    chunk: dict[str, Any] = {**base, "choices": [choice]}
    if params.continuous_usage:
        usage: dict[str, Any] = _usage(params, end)
        if chat:
            usage["completion_tokens_details"] = None
        chunk["usage"] = usage
    return chunk


def run_server(options: ServerOptions) -> None:
    """Serve until interrupted. Handler cancellation on: a disconnect aborts its request at once."""
    app = build_app(options)
    log.info(
        "sloguard sim serve: profile %s on http://%s:%d (time scale %s, policy %s)",
        options.profile,
        options.host,
        options.port,
        options.time_scale,
        options.scheduling_policy,
    )
    web.run_app(app, host=options.host, port=options.port, handler_cancellation=True, print=None)
