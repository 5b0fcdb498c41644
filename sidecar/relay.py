"""Turns engine chunks back into what an OpenAI client asked for (used by sidecar/http_front.py).

Upstream we always stream with usage forced (sidecar/engine_client.py). A streaming client gets the
chunks as vLLM sent them, minus the per-chunk `usage` unless it asked for `continuous_usage_stats`, and
minus the final usage-only chunk unless it asked for `include_usage` (OpenAI contract: no
`stream_options` → no usage). A non-streaming client gets one response assembled from the chunks.
"""

import json
import re
from dataclasses import dataclass, field
from typing import Any

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
    if wish.continuous or "usage" not in chunk.payload:
        return chunk.raw
    stripped = _USAGE_MEMBER.sub(b"", chunk.raw, count=1)
    if b'"usage"' in stripped:  # an unexpected layout: re-serialise instead
        return json.dumps(
            {k: v for k, v in chunk.payload.items() if k != "usage"}, separators=(",", ":")
        ).encode()
    return stripped


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
            self.usage = {k: v for k, v in payload["usage"].items() if k != "completion_tokens_details"}
        if payload.get("system_fingerprint"):
            self.fingerprint = payload["system_fingerprint"]

    def response(self) -> dict[str, Any]:
        first = self.first or {}
        text = "".join(self.text)
        if self.endpoint == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": self.finish_reason,
                "stop_reason": self.stop_reason,
            }
            obj = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": self.finish_reason,
                "stop_reason": self.stop_reason,
            }
            obj = "text_completion"
        response: dict[str, Any] = {
            "id": first.get("id", ""),
            "object": obj,
            "created": first.get("created", 0),
            "model": first.get("model", ""),
            "choices": [choice],
            "usage": self.usage,
        }
        if self.fingerprint:
            response["system_fingerprint"] = self.fingerprint
        return response
