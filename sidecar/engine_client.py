"""Client of the engine's OpenAI-compatible HTTP API on localhost (vLLM or `sloguard sim serve`).

Called by the lifecycle (sidecar/lifecycle.py) for every released request. It always streams upstream
with `stream_options: {include_usage, continuous_usage_stats}` forced, so every chunk carries the
cumulative `usage.completion_tokens` — one SSE chunk can carry several tokens under load
(reference/vllm-behaviour.md §3.9) — and timestamps each chunk on arrival (the first token's chunk, not
the response headers, defines TTFT); the chunks one read delivered come as one list, so a front can relay
them in one write. What the client asked for is restored by the fronts (sidecar/relay.py).
The vLLM `priority` field is stamped only when the engine runs priority scheduling, with polarity
converted (ours: higher = more important; vLLM: lower = earlier); otherwise any client-sent value is
stripped. Cancelling the consuming task closes the connection, which makes vLLM abort the request (§3.7).
A request whose connection failed before any answer (refused, or a pooled keep-alive connection the engine
had closed) is sent once more on a fresh connection: nothing was relayed yet, so it is safe to repeat, and
a closed keep-alive connection is no engine error (sidecar/engine_health.py decides what is).
Past the first token, the caller may have the client leave a stream unread for a while (`read_hold_s`,
sidecar/core/relay_hold.py): reading from that connection stops (the transport's `pause_reading`), the
engine's chunks gather in the socket, and the next read takes them all.
"""

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from sloguard.sidecar.hop_timing import Hop, HopTimer

log = logging.getLogger(__name__)

Endpoint = Literal["completions", "chat"]
ENDPOINT_PATHS: dict[Endpoint, str] = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


class EngineChunk:
    """One upstream SSE data chunk, as received.

    The relay's hot path reads only the raw bytes and the few fields parsed from them (token counts, finish
    reason); `payload` and `text` are decoded from `raw` on first use (the gRPC front and the non-streamed
    answer use them; a streaming HTTP client gets `raw` without the chunk ever being decoded).
    """

    __slots__ = (
        "_payload",
        "_text",
        "completion_tokens",
        "finish_reason",
        "has_usage",
        "prompt_tokens",
        "raw",
        "received_s",
        "tokens",
        "usage_only",
    )

    def __init__(
        self,
        *,
        raw: bytes,
        received_s: float,
        tokens: int,
        completion_tokens: int,
        prompt_tokens: int | None,
        usage_only: bool,
        finish_reason: str | None,
        has_usage: bool,
        payload: dict[str, Any] | None = None,
        text: str | None = None,
    ) -> None:
        self.raw = raw  # the chunk's JSON exactly as the engine sent it (relayed as is where possible)
        self.received_s = received_s  # the client's clock (time.monotonic() unless given) at arrival
        self.tokens = tokens  # completion tokens this chunk adds (0 for role and usage-only chunks)
        self.completion_tokens = completion_tokens  # cumulative
        self.prompt_tokens = prompt_tokens
        self.usage_only = usage_only  # the final `choices: []` usage chunk
        self.finish_reason = finish_reason
        self.has_usage = has_usage  # the chunk carries a `usage` member
        self._payload = payload
        self._text = text

    @property
    def payload(self) -> dict[str, Any]:
        if self._payload is None:
            decoded = _decode_json(self.raw.decode())
            self._payload = decoded if isinstance(decoded, dict) else {}
        return self._payload

    @property
    def text(self) -> str:
        if self._text is None:
            choices = self.payload.get("choices") or []
            self._text = "".join(_text_of(c) for c in choices)
        return self._text

    def __repr__(self) -> str:
        return f"EngineChunk(raw={self.raw!r}, tokens={self.tokens}, finish_reason={self.finish_reason!r})"


class EngineError(Exception):
    """The engine did not serve the request to the end."""

    def __init__(self, message: str, *, status: int | None = None, started: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.started = started  # whether any chunk had arrived

    @property
    def is_client_error(self) -> bool:
        """The engine refused the request itself (4xx): the client's input, not the engine, is at fault."""
        return self.status is not None and 400 <= self.status < 500 and self.status != 429


def engine_priority(our_priority: int) -> int:
    """vLLM's `priority` (lower = earlier) for our class priority (higher = more important)."""
    return -our_priority


def prepare_upstream_body(
    body: dict[str, Any],
    *,
    model: str,
    priority: int | None,
    stamps_priority: bool,
    stream_interval: int = 1,
) -> dict[str, Any]:
    """The body sent upstream: streamed, usage forced, model defaulted, priority stamped or stripped, and
    `stream_interval` (tokens per chunk, sidecar/core/stream_interval.py) stamped where it is above 1 and
    above what the client asked for itself (the engine raises a request's interval, never lowers it)."""
    upstream = dict(body)
    upstream["stream"] = True
    upstream["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
    if model:
        upstream["model"] = model
    upstream.pop("priority", None)
    if stamps_priority and priority is not None:
        upstream["priority"] = engine_priority(priority)
    asked = upstream.get("stream_interval", 1)
    if stream_interval > 1 and type(asked) is int and 1 <= asked < stream_interval:
        upstream["stream_interval"] = stream_interval  # a malformed client value goes on (the engine 400s)
    return upstream


# vLLM accepts a per-request `stream_interval` from this version on (vllm-project/vllm#49754, July 2026;
# 0.32.0 is the first version measured here). An older vLLM ignores the field and logs a warning per request.
STREAM_INTERVAL_MIN_VERSION = (0, 32, 0)


def supports_stream_interval(version: object) -> bool:
    """Whether an engine reporting this `/version` string takes a per-request `stream_interval`."""
    if not isinstance(version, str):
        return False
    match = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", version.strip())
    if match is None:
        return False
    numbers = tuple(int(part or 0) for part in match.groups())
    return numbers >= STREAM_INTERVAL_MIN_VERSION


def _text_of(choice: dict[str, Any]) -> str:
    if "text" in choice:
        return str(choice.get("text") or "")
    delta = choice.get("delta") or {}
    return str(delta.get("content") or "")


# Failures of a request before the engine answered anything (no status line): a refused or timed-out
# connect, or a pooled connection the engine had closed (vLLM's server closes idle keep-alive connections).
UNANSWERED_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
    aiohttp.ConnectionTimeoutError,
)


class EngineClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        model: str = "",
        stamps_priority: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock  # stamps `EngineChunk.received_s`; the lifecycle's clock (the demo scales it)
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.stamps_priority = stamps_priority
        self.retried = 0  # requests sent again on a fresh connection (UNANSWERED_ERRORS on the first)
        self.stream_interval_supported: bool | None = None  # from /version (`probe_features`); None: not yet

    @contextlib.asynccontextmanager
    async def _post(
        self, url: str, body: dict[str, Any], request_id: str
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST, and once more on a fresh connection if the first try got no answer at all."""
        headers = {"X-Request-Id": request_id}
        try:
            response = await self.session.post(url, json=body, headers=headers)
        except UNANSWERED_ERRORS as error:
            self.retried += 1
            log.info(
                "request %s: no answer (%s: %s); retrying once on a fresh connection",
                request_id,
                type(error).__name__,
                error,
            )
        else:
            async with response:
                yield response
            return
        fresh = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True), timeout=self.session.timeout
        )
        async with fresh, fresh.post(url, json=body, headers=headers) as response:
            yield response

    async def get_json(self, path: str, timeout_s: float = 5.0) -> tuple[int | None, Any]:
        """GET a JSON document from the engine: (status, body), or (None, None) when unreachable."""
        try:
            async with self.session.get(
                f"{self.base_url}{path}", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as response:
                return response.status, await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
            return None, None

    def stream_interval_for(self, tokens_per_chunk: int) -> int:
        """The `stream_interval` to send this engine for the wanted tokens per chunk: 1 (none sent) unless
        the engine is known to take the field (`probe_features`)."""
        return tokens_per_chunk if self.stream_interval_supported else 1

    async def probe_features(self, timeout_s: float = 5.0) -> None:
        """Learn from the engine's `/version` what it supports (`stream_interval_supported`); left unknown
        when the engine does not answer, to be asked again at a later probe."""
        status, body = await self.get_json("/version", timeout_s)
        if status is None:
            return
        version = body.get("version") if status == 200 and isinstance(body, dict) else None
        self.stream_interval_supported = supports_stream_interval(version)
        log.info(
            "engine version %s: per-request stream_interval %s",
            version,
            "supported" if self.stream_interval_supported else "not supported",
        )

    async def healthy(self, timeout_s: float = 2.0) -> bool:
        try:
            async with self.session.get(
                f"{self.base_url}/health", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def stream(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        *,
        request_id: str,
        priority: int | None,
        hops: HopTimer | None = None,
        read_hold_s: Callable[[], float] | None = None,
        stream_interval: int = 1,
    ) -> AsyncGenerator[list[EngineChunk], None]:
        """Stream the request's chunks, all those already buffered at once (one list per socket read).

        Under load several SSE chunks of one stream arrive between two turns of the event loop; handing
        them over together lets the fronts relay them in one write (fewer syscalls and loop hops per
        token). Every chunk keeps its own token count. Raises EngineError unless the stream ends with
        `[DONE]`. `hops` (sidecar/hop_timing.py) is marked when the response headers and the first chunk
        arrive. `read_hold_s`, asked after every batch past the first token, says how many seconds the
        next read may wait (0: read at once). `stream_interval` (tokens per chunk) is sent as given where
        above 1: the caller asks `stream_interval_for` what this engine takes.
        """
        upstream = prepare_upstream_body(
            body,
            model=self.model,
            priority=priority,
            stamps_priority=self.stamps_priority,
            stream_interval=stream_interval,
        )
        url = f"{self.base_url}{ENDPOINT_PATHS[endpoint]}"
        started = False
        try:
            async with self._post(url, upstream, request_id) as resp:
                if hops is not None:
                    hops.mark(Hop.ENGINE_CONNECT)
                if resp.status != 200:
                    raise EngineError(await _error_message(resp), status=resp.status)
                completion_tokens = 0
                done = False
                pending = b""  # an incomplete line carried over to the next read
                try:
                    while True:
                        data = await resp.content.readany()  # everything buffered; b"" at the end
                        lines, pending = split_lines(pending, data)
                        batch = chunks_of_lines(lines, self.clock(), completion_tokens, started=started)
                        done = done or batch.done  # read on to the end: the connection goes back to the pool
                        if batch.chunks:
                            completion_tokens = batch.chunks[-1].completion_tokens
                            if not started and hops is not None:
                                hops.mark(Hop.ENGINE_FIRST_CHUNK)
                            started = True
                            yield batch.chunks
                        if not data:
                            break
                        if started and not done and read_hold_s is not None:
                            hold_s = read_hold_s()
                            if hold_s > 0.0:
                                await _hold_reading(resp, hold_s)
                except BaseException:
                    resp.close()  # abort upstream: vLLM stops generating when the connection closes
                    raise
                if not done:
                    raise EngineError("engine stream ended before [DONE]", started=started)
        except EngineError:
            raise
        except (aiohttp.ClientError, json.JSONDecodeError, UnicodeDecodeError, TimeoutError) as error:
            kind = type(error).__name__
            raise EngineError(f"engine connection failed ({kind}: {error})", started=started) from error


async def _hold_reading(resp: aiohttp.ClientResponse, hold_s: float) -> None:
    """Leave the response's connection unread for `hold_s` (its data waits in the socket meanwhile)."""
    connection = resp.connection
    transport = connection.transport if connection is not None else None
    if transport is None or transport.is_closing():
        return
    transport.pause_reading()
    try:
        await asyncio.sleep(hold_s)
    finally:
        if not transport.is_closing():
            transport.resume_reading()


_decode_json = json.JSONDecoder().decode  # json.loads minus its per-call encoding sniffing (bytes) and checks


def split_lines(pending: bytes, data: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines of `pending + data` and the incomplete rest; `data` b"" (the end) flushes all."""
    lines = (pending + data).split(b"\n")
    if not data:
        return lines, b""
    rest = lines.pop()
    return lines, rest


@dataclass(slots=True)
class _Batch:
    chunks: list[EngineChunk]
    done: bool  # the `[DONE]` line was among the lines


def chunks_of_lines(lines: list[bytes], now_s: float, previous_tokens: int, *, started: bool) -> _Batch:
    """The data chunks among complete SSE lines (other lines and fields are skipped), all stamped `now_s`."""
    batch = _Batch([], done=False)
    for raw_line in lines:
        line = raw_line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            batch.done = True
            continue
        fast = _fast_chunk(data, now_s, previous_tokens)
        if fast is not None:
            previous_tokens = fast.completion_tokens
            batch.chunks.append(fast)
            continue
        payload = _decode_json(data.decode())
        if not isinstance(payload, dict):
            raise EngineError("engine sent a non-object SSE chunk", started=started or bool(batch.chunks))
        if "error" in payload:
            message = f"engine error mid-stream: {payload['error']}"
            raise EngineError(message, started=started or bool(batch.chunks))
        chunk = _chunk_of(payload, now_s, previous_tokens, raw=data)
        previous_tokens = chunk.completion_tokens
        batch.chunks.append(chunk)
    return batch


def _chunk_of(payload: dict[str, Any], now_s: float, previous_tokens: int, raw: bytes = b"") -> EngineChunk:
    choices = payload.get("choices") or []
    usage = payload.get("usage") or {}
    usage_only = not choices and bool(usage)
    if len(choices) == 1:  # n=1, all the fronts accept: no generator per chunk on the hot path
        text = _text_of(choices[0])
        finish = choices[0].get("finish_reason") or None
    else:
        text = "".join(_text_of(c) for c in choices)
        finish = next((c.get("finish_reason") for c in choices if c.get("finish_reason")), None)
    if "completion_tokens" in usage:
        cumulative = max(previous_tokens, int(usage["completion_tokens"]))
    else:  # no usage on this chunk: one token per chunk carrying a choice with text or a finish
        cumulative = previous_tokens + (1 if text or finish is not None else 0)
    return EngineChunk(
        payload=payload,
        raw=raw or json.dumps(payload, separators=(",", ":")).encode(),
        received_s=now_s,
        tokens=0 if usage_only else cumulative - previous_tokens,
        completion_tokens=cumulative,
        prompt_tokens=usage.get("prompt_tokens"),
        usage_only=usage_only,
        finish_reason=finish,
        has_usage="usage" in payload,
        text=text,
    )


# vLLM's compact layout of a one-choice token chunk with continuous usage (vllm-behaviour.md §3.3): the
# usage member, its three counts in this order, at the end. Inside a JSON string every `"` is escaped, so
# none of these patterns can match a chunk's text.
_USAGE_COUNTS = re.compile(
    rb',"usage":\{"prompt_tokens":(\d+),"total_tokens":\d+,"completion_tokens":(\d+)\}'
)
_FINISH = re.compile(rb'"finish_reason":(?:null|"([a-z_]+)")')


def _fast_chunk(data: bytes, now_s: float, previous_tokens: int) -> EngineChunk | None:
    """The chunk parsed without decoding its JSON, when it has vLLM's usual one-choice layout with
    continuous usage; None for anything else (role, usage-only, error, several choices, another layout),
    which `_chunk_of` decodes in full."""
    # An error member is a key (`"error":`); JSON escaping keeps a quote inside a string from making one,
    # so a token whose text is `error` stays on the fast path.
    if not data.startswith(b'{"id":') or b'"choices":[{' not in data or b'"error":' in data:
        return None
    usage = _USAGE_COUNTS.search(data)
    finishes = _FINISH.findall(data)
    if usage is None or len(finishes) != 1 or data.count(b'"usage":') != 1 or data.count(b'"index":') != 1:
        return None
    cumulative = max(previous_tokens, int(usage.group(2)))
    finish = finishes[0].decode() or None
    return EngineChunk(
        raw=data,
        received_s=now_s,
        tokens=cumulative - previous_tokens,
        completion_tokens=cumulative,
        prompt_tokens=int(usage.group(1)),
        usage_only=False,
        finish_reason=finish,
        has_usage=True,
    )


async def _error_message(resp: aiohttp.ClientResponse) -> str:
    text = await resp.text()
    try:
        body = json.loads(text)
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
    except json.JSONDecodeError:
        message = None
    return f"engine answered {resp.status}: {message or text[:500]}"
