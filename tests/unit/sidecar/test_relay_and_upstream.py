"""What goes upstream (usage forced, priority polarity) and what comes back to the client (usage restored)."""

import json
from typing import Any

import pytest

from sloguard.sidecar.engine_client import (
    EngineChunk,
    _chunk_of,
    prepare_upstream_body,
    supports_stream_interval,
)
from sloguard.sidecar.relay import Assembler, StreamRelay, UsageWish, client_chunk, with_fingerprint

# Chunks as vllm-behaviour.md §3.3 records them (completions, continuous usage), tokens coalesced in one.
STREAM: list[dict[str, Any]] = [
    {
        "id": "cmpl-1",
        "choices": [{"index": 0, "text": " a", "finish_reason": None}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 1},
    },
    {
        "id": "cmpl-1",
        "choices": [{"index": 0, "text": " b c", "finish_reason": None}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 3},
    },
    {
        "id": "cmpl-1",
        "choices": [{"index": 0, "text": " d", "finish_reason": "length", "stop_reason": None}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 4},
    },
    {
        "id": "cmpl-1",
        "choices": [],
        "usage": {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8},
        "system_fingerprint": "fp",
    },
]


def _chunks(payloads: list[dict[str, Any]]) -> list[EngineChunk]:
    out, tokens = [], 0
    for i, payload in enumerate(payloads):
        chunk = _chunk_of(payload, float(i), tokens)
        tokens = chunk.completion_tokens
        out.append(chunk)
    return out


def test_tokens_are_counted_from_usage_not_chunks() -> None:
    chunks = _chunks(STREAM)
    assert [c.tokens for c in chunks] == [1, 2, 1, 0]
    assert [c.usage_only for c in chunks] == [False, False, False, True]
    assert chunks[2].finish_reason == "length" and chunks[0].prompt_tokens == 4


def test_without_usage_each_chunk_with_a_token_counts_one() -> None:
    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    content = {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}
    assert [c.tokens for c in _chunks([role, content, content])] == [0, 1, 1]


@pytest.mark.parametrize(
    ("options", "kept_usage", "kept_final"),
    [
        (None, 0, False),
        ({"include_usage": True}, 0, True),
        ({"include_usage": True, "continuous_usage_stats": True}, 3, True),
        ({"include_usage": False}, 0, False),
    ],
)
def test_client_chunk_restores_what_the_client_asked(
    options: dict[str, bool] | None, kept_usage: int, kept_final: bool
) -> None:
    body: dict[str, Any] = {} if options is None else {"stream_options": options}
    raw = [client_chunk(c, UsageWish.of(body)) for c in _chunks(STREAM)]
    relayed = [None if r is None else json.loads(r) for r in raw]
    assert (relayed[-1] is not None) is kept_final
    assert sum(1 for r in relayed[:-1] if r is not None and "usage" in r) == kept_usage
    assert [r for r in relayed[:-1]] == [
        {k: v for k, v in c.items() if kept_usage or k != "usage"} for c in STREAM[:-1]
    ]


USAGE_LAYOUTS = [
    # vLLM's compact layouts (vllm-behaviour.md §3.3, §3.4), a nested details object, and a spaced one
    b'{"id":"c","choices":[{"index":0,"text":"a"}],"usage":{"prompt_tokens":4,"completion_tokens":1}}',
    b'{"id":"c","choices":[{"index":0,"delta":{"content":"}"}}],"usage":{"prompt_tokens":15,'
    b'"completion_tokens":2,"completion_tokens_details":null}}',
    b'{"id":"c","choices":[{"index":0,"text":"x"}],"usage":{"prompt_tokens":4,"prompt_tokens_details":'
    b'{"cached_tokens":0},"completion_tokens":1},"system_fingerprint":"f"}',
    b'{"id": "c", "choices": [{"index": 0, "text": "a"}], '
    b'"usage": {"prompt_tokens": 4, "completion_tokens": 1}}',
]


@pytest.mark.parametrize("raw", USAGE_LAYOUTS)
def test_usage_is_stripped_exactly_whatever_the_layout(raw: bytes) -> None:
    payload = json.loads(raw)
    chunk = _chunk_of(payload, 0.0, 0, raw=raw)
    relayed = client_chunk(chunk, UsageWish(include_usage=True, continuous=False))
    assert relayed is not None
    assert json.loads(relayed) == {k: v for k, v in payload.items() if k != "usage"}
    assert client_chunk(chunk, UsageWish(include_usage=True, continuous=True)) == raw  # relayed untouched


def test_assembler_builds_a_completion_and_a_chat_response() -> None:
    completion = Assembler("completions")
    for chunk in _chunks(STREAM):
        completion.add(chunk)
    answer = completion.response()
    assert answer["choices"][0]["text"] == " a b c d" and answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 4 and answer["system_fingerprint"] == "fp"
    assert answer["usage"] == {
        "prompt_tokens": 4,
        "total_tokens": 8,
        "completion_tokens": 4,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }
    chat = Assembler("chat")
    for chunk in _chunks([{"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}]):
        chat.add(chunk)
    message = chat.response()["choices"][0]["message"]
    assert (message["role"], message["content"]) == ("assistant", "hi")


def test_assembled_answers_have_vllms_member_order() -> None:  # vllm-behaviour.md §1.1
    completion = Assembler("completions")
    for chunk in _chunks(STREAM):
        completion.add(chunk)
    assert list(completion.response()) == [
        "id", "object", "created", "model", "choices", "service_tier", "system_fingerprint", "usage",
        "kv_transfer_params", "ec_transfer_params", "metrics",
    ]  # fmt: skip
    assert list(completion.response()["choices"][0]) == [
        "index", "text", "logprobs", "finish_reason", "stop_reason", "token_ids", "prompt_logprobs",
        "prompt_token_ids", "routed_experts",
    ]  # fmt: skip
    chat = Assembler("chat").response()
    assert list(chat)[-6:] == [
        "prompt_logprobs", "prompt_token_ids", "prompt_text",
        "kv_transfer_params", "ec_transfer_params", "metrics",
    ]  # fmt: skip


def _relayed(wish: UsageWish, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    relay = StreamRelay(wish)
    out = [data for chunk in _chunks(payloads) for data in relay.feed(chunk)] + relay.flush()
    return [json.loads(data) for data in out]


def test_without_usage_the_fingerprint_moves_to_the_finish_chunk() -> None:  # vllm-behaviour.md §3.1
    relayed = _relayed(UsageWish(False, False), STREAM)
    assert len(relayed) == 3 and all("usage" not in c for c in relayed)
    assert (
        relayed[-1]["choices"][0]["finish_reason"] == "length" and relayed[-1]["system_fingerprint"] == "fp"
    )
    assert all("system_fingerprint" not in c for c in relayed[:-1])
    assert list(relayed[-1])[-1] == "system_fingerprint"  # the last member, where vLLM puts it
    # with usage asked for, the usage chunk keeps it (§3.2); a stream without a usage chunk loses nothing
    assert [("system_fingerprint" in c) for c in _relayed(UsageWish(True, False), STREAM)] == [0, 0, 0, 1]
    assert [c["choices"][0]["text"] for c in _relayed(UsageWish(False, False), STREAM[:-1])] == [
        " a",
        " b c",
        " d",
    ]


def test_with_fingerprint_appends_the_member() -> None:
    assert json.loads(with_fingerprint(b'{"a":1} ', "fp")) == {"a": 1, "system_fingerprint": "fp"}
    with pytest.raises(ValueError, match="JSON object"):
        with_fingerprint(b"[1]", "fp")


@pytest.mark.parametrize(
    ("stamps", "priority", "expected"),
    [(True, 10, -10), (True, 0, 0), (True, None, None), (False, 10, None)],
)
def test_upstream_body_forces_usage_and_converts_priority(
    stamps: bool, priority: int | None, expected: int | None
) -> None:
    body = {"prompt": "x", "priority": 7, "stream": False, "stream_options": {"include_usage": False}}
    upstream = prepare_upstream_body(body, model="served", priority=priority, stamps_priority=stamps)
    assert upstream["stream"] is True
    assert upstream["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert upstream["model"] == "served"
    assert upstream.get("priority") == expected
    assert body["priority"] == 7  # the client's body is not mutated


@pytest.mark.parametrize(
    ("ours", "asked", "expected"),
    [
        (1, None, None),  # nothing to pack: the field is not sent
        (4, None, 4),
        (4, 2, 4),  # the engine takes the larger anyway; ours is the one that bounds the wait
        (4, 8, 8),  # the client asked for more packing itself: kept
        (4, 0, 0),  # malformed: relayed for the engine's 400, as without the sidecar
        (4, "4", "4"),
        (1, 3, 3),
    ],
)
def test_upstream_body_stamps_the_stream_interval(ours: int, asked: object, expected: object) -> None:
    body: dict[str, object] = {"prompt": "x"}
    if asked is not None:
        body["stream_interval"] = asked
    upstream = prepare_upstream_body(
        body, model="", priority=None, stamps_priority=False, stream_interval=ours
    )
    assert upstream.get("stream_interval") == expected
    assert body.get("stream_interval") == asked  # the client's body is not mutated


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        ("0.32.0", True),
        ("0.32.1.dev5+gabc", True),
        ("v0.40", True),
        ("1.0.0", True),
        ("0.31.9", False),
        ("0.11.0", False),
        ("", False),
        ("unknown", False),
        (None, False),
        (32, False),
    ],
)
def test_stream_interval_is_sent_only_to_a_vllm_that_takes_it(version: object, supported: bool) -> None:
    assert supports_stream_interval(version) is supported
