"""Turns engine chunks back into what an OpenAI client asked for (used by sidecar/http_front.py).

Upstream we always stream with usage forced (sidecar/engine_client.py). A streaming client gets the
chunks as vLLM sent them, minus the per-chunk `usage` unless it asked for `continuous_usage_stats`, and
minus the final usage-only chunk unless it asked for `include_usage` (OpenAI contract: no
`stream_options` → no usage); vLLM then puts `system_fingerprint` on the finish chunk instead
(reference/vllm-behaviour.md §3.1, §3.2), and so does `StreamRelay`. A non-streaming client gets one
response assembled from the chunks, in vLLM's field layout for a non-streamed answer (§1.1).
"""

import json
import re
from dataclasses import dataclass, field
from typing import Any

from sloguard.api.openai_layout import unary_answer, unary_usage
from sloguard.sidecar.engine_client import Endpoint, EngineChunk


@dataclass(frozen=True, slots=True)
class UsageWish:
    include_usage: bool
    continuous: bool

    @classmethod
    def of(cls, body: dict[str, Any]) -> "UsageWish":
        options = body.get("stream_options")
        if not isinstance(options, dict):
            return cls(False, False)
        include = bool(options.get("include_usage", True))
        return cls(include, include and bool(options.get("continuous_usage_stats", False)))


# vLLM serialises compactly and puts `usage` (at most one nested object deep) after `choices`.
_USAGE_MEMBER = re.compile(rb',"usage":\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}')


def client_chunk(chunk: EngineChunk, wish: UsageWish) -> bytes | None:
    """The JSON of the chunk to relay (the engine's bytes where unchanged), or None to drop it."""
    if chunk.usage_only:
        return chunk.raw if wish.include_usage else None
    if wish.continuous or not chunk.has_usage:
        return chunk.raw
    stripped = _USAGE_MEMBER.sub(b"", chunk.raw, count=1)
    if b'"usage"' in stripped:  # an unexpected layout: re-serialise instead
        return json.dumps(
            {k: v for k, v in chunk.payload.items() if k != "usage"}, separators=(",", ":")
        ).encode()
    return stripped


def with_fingerprint(raw: bytes, fingerprint: str) -> bytes:
    """The chunk's JSON object with `system_fingerprint` appended as its last member, as vLLM places it."""
    body = raw.rstrip()
    if not body.endswith(b"}"):
        raise ValueError("not a JSON object")
    return body[:-1] + b',"system_fingerprint":' + json.dumps(fingerprint).encode() + b"}"


@dataclass
class StreamRelay:
    """The bytes to relay to one streaming client, chunk by chunk (`feed`, then `flush` at the end).

    Without `include_usage` the usage-only chunk, which carries `system_fingerprint` upstream, is dropped:
    the finish chunk is then held back until it comes, and relayed with the fingerprint (as vLLM sends it
    to a client that did not ask for usage)."""

    wish: UsageWish
    _held: bytes | None = None

    def feed(self, chunk: EngineChunk) -> list[bytes]:
        out = self.flush()
        if chunk.usage_only and not self.wish.include_usage:
            fingerprint = chunk.payload.get("system_fingerprint")
            if out and isinstance(fingerprint, str):
                out[-1] = with_fingerprint(out[-1], fingerprint)
            return out
        data = client_chunk(chunk, self.wish)
        if data is None:
            return out
        if chunk.finish_reason and not self.wish.include_usage and b'"system_fingerprint"' not in data:
            self._held = data
        else:
            out.append(data)
        return out

    def flush(self) -> list[bytes]:
        """What is still held back (the finish chunk when the stream ended without a usage chunk)."""
        held, self._held = self._held, None
        return [] if held is None else [held]


@dataclass
class Assembler:
    """Builds a non-streamed OpenAI response from the streamed chunks."""

    endpoint: Endpoint
    text: list[str] = field(default_factory=list)
    first: dict[str, Any] | None = None
    finish_reason: str | None = None
    stop_reason: Any = None
    usage: dict[str, Any] | None = None
    fingerprint: str | None = None

    def add(self, chunk: EngineChunk) -> None:
        payload = chunk.payload
        if self.first is None:
            self.first = payload
        if chunk.text:
            self.text.append(chunk.text)
        for choice in payload.get("choices") or []:
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                self.stop_reason = choice.get("stop_reason")
        if payload.get("usage"):
            self.usage = payload["usage"]  # `response` picks the members it answers with
        if payload.get("system_fingerprint"):
            self.fingerprint = payload["system_fingerprint"]

    def response(self) -> dict[str, Any]:
        """vLLM 0.32's non-streamed answer, member for member (vllm-behaviour.md §1.1)."""
        first = self.first or {}
        usage = None
        if self.usage is not None:
            usage = unary_usage(
                self.usage.get("prompt_tokens", 0),
                self.usage.get("completion_tokens", 0),
                total_tokens=self.usage.get("total_tokens"),
                prompt_tokens_details=self.usage.get("prompt_tokens_details"),
            )
        return unary_answer(
            chat=self.endpoint == "chat",
            response_id=first.get("id", ""),
            created=first.get("created", 0),
            model=first.get("model", ""),
            text="".join(self.text),
            finish_reason=self.finish_reason,
            stop_reason=self.stop_reason,
            fingerprint=self.fingerprint,
            usage=usage,
        )
