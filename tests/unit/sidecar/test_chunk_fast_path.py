"""The relay reads vLLM's usual chunk layout without decoding its JSON, and agrees with the full decode."""

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sloguard.sidecar.engine_client import _chunk_of, _fast_chunk, chunks_of_lines
from sloguard.sidecar.relay import StreamRelay, UsageWish


def _completion(text: str, finish: str | None, prompt: int, completion: int) -> dict[str, Any]:
    """vLLM 0.32's completions chunk with continuous usage, member for member (vllm-behaviour.md §3.3)."""
    return {
        "id": "cmpl-b4c2e85eac1efb1d",
        "object": "text_completion",
        "created": 1795317198,
        "model": "tiny",
        "choices": [
            {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": finish,
                "stop_reason": None,
                "prompt_token_ids": None,
                "token_ids": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion,
            "completion_tokens": completion,
        },
    }


def _chat(content: str, finish: str | None, completion: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-89ecf248f554f903",
        "object": "chat.completion.chunk",
        "created": 1795317204,
        "model": "tiny",
        "choices": [
            {
                "index": 0,
                "delta": {"content": content},
                "logprobs": None,
                "finish_reason": finish,
                "token_ids": None,
            }
        ],
        "usage": {"prompt_tokens": 15, "total_tokens": 15 + completion, "completion_tokens": completion},
    }


def _raw(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


TRICKY = [
    " brow",
    "",
    '"usage":{"prompt_tokens":1,"total_tokens":2,"completion_tokens":9}',
    '","finish_reason":"stop"',
    '"error"',
    '\\"',
    "ünïcødé ✓",
    '"index":3',
]


@pytest.mark.parametrize("text", TRICKY)
@pytest.mark.parametrize("finish", [None, "length", "stop", "abort"])
def test_fast_path_agrees_with_the_full_decode(text: str, finish: str | None) -> None:
    for payload in (_completion(text, finish, 4, 7), _chat(text, finish, 7)):
        raw = _raw(payload)
        fast = _fast_chunk(raw, 1.5, 5)
        full = _chunk_of(json.loads(raw), 1.5, 5, raw=raw)
        assert fast is not None, raw
        for name in ("raw", "received_s", "tokens", "completion_tokens", "prompt_tokens", "usage_only"):
            assert getattr(fast, name) == getattr(full, name), name
        assert fast.finish_reason == full.finish_reason
        assert fast.has_usage and full.has_usage
        assert fast.text == full.text == text  # decoded lazily, on first use
        assert fast.payload == payload


@given(text=st.text(max_size=40), completion=st.integers(0, 10_000), previous=st.integers(0, 10_000))
@example(text="error", completion=0, previous=0)  # a token's text is not an error member
@example(text='x","error":{"message":"m"}', completion=1, previous=0)
def test_fast_path_counts_tokens_as_the_decode_does(text: str, completion: int, previous: int) -> None:
    raw = _raw(_completion(text, None, 3, completion))
    fast = _fast_chunk(raw, 0.0, previous)
    full = _chunk_of(json.loads(raw), 0.0, previous, raw=raw)
    assert fast is not None
    assert (fast.tokens, fast.completion_tokens, fast.text) == (
        full.tokens,
        full.completion_tokens,
        full.text,
    )


@pytest.mark.parametrize(
    "payload",
    [
        {
            "id": "x",
            "object": "text_completion",
            "choices": [],
            "usage": {"prompt_tokens": 1, "total_tokens": 2, "completion_tokens": 1},
        },
        {"error": {"message": "boom"}},
        {**_completion("a", None, 1, 1), "choices": [_completion("a", None, 1, 1)["choices"][0]] * 2},
        {k: v for k, v in _completion("a", None, 1, 1).items() if k != "usage"},
        {
            **_completion("a", None, 1, 1),
            "usage": {"completion_tokens": 1, "prompt_tokens": 1, "total_tokens": 2},
        },
    ],
    ids=["usage-only", "error", "two-choices", "no-usage", "other-usage-order"],
)
def test_other_layouts_take_the_full_decode(payload: dict[str, Any]) -> None:
    assert _fast_chunk(_raw(payload), 0.0, 0) is None


def test_a_streaming_client_gets_the_engines_bytes_and_nothing_is_decoded() -> None:
    lines = [b"data: " + _raw(_completion(f" t{i}", None, 4, i + 1)) for i in range(3)]
    batch = chunks_of_lines(lines, 0.0, 0, started=False)
    relay = StreamRelay(UsageWish(include_usage=True, continuous=True))
    out = [data for chunk in batch.chunks for data in relay.feed(chunk)]
    assert out == [line[6:] for line in lines]
    assert all(chunk._payload is None for chunk in batch.chunks)  # never decoded
    no_usage = StreamRelay(UsageWish(include_usage=True, continuous=False))
    stripped = [json.loads(data) for chunk in batch.chunks for data in no_usage.feed(chunk)]
    assert all("usage" not in s for s in stripped)
