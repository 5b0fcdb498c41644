"""The engine's SSE stream, read by read (sidecar/engine_client.py `split_lines`, `chunks_of_lines`)."""

import json

import pytest

from sloguard.sidecar.engine_client import EngineError, chunks_of_lines, split_lines


def _event(i: int) -> bytes:
    payload = {
        "choices": [{"index": 0, "text": f" t{i}", "finish_reason": None}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2 * (i + 1)},  # two tokens per chunk
    }
    return b"data: " + json.dumps(payload).encode() + b"\r\n\r\n"


BODY = b": keep-alive comment\n\n" + b"".join(_event(i) for i in range(5)) + b"data: [DONE]\n\n"


@pytest.mark.parametrize("piece", [1, 7, 64, len(BODY)])
def test_any_read_boundaries_give_the_same_chunks(piece: int) -> None:
    pending, tokens, texts, done, batches = b"", 0, [], False, 0
    reads = [BODY[i : i + piece] for i in range(0, len(BODY), piece)] + [b""]  # b"": the end
    for now_s, data in enumerate(reads):
        lines, pending = split_lines(pending, data)
        batch = chunks_of_lines(lines, float(now_s), tokens, started=tokens > 0)
        done = done or batch.done
        for chunk in batch.chunks:
            assert chunk.tokens == 2 and chunk.received_s == now_s
            tokens = chunk.completion_tokens
            texts.append(chunk.text)
        batches += bool(batch.chunks)
    assert texts == [f" t{i}" for i in range(5)] and tokens == 10 and done and pending == b""
    assert batches == (1 if piece == len(BODY) else 5)  # one read holding every chunk: one batch


def test_a_line_without_its_newline_is_flushed_at_the_end() -> None:
    lines, pending = split_lines(b"", b"data: [DONE]")
    assert lines == [] and pending == b"data: [DONE]"
    lines, pending = split_lines(pending, b"")
    assert chunks_of_lines(lines, 0.0, 0, started=False).done and pending == b""


def test_an_error_chunk_mid_stream_raises_as_started() -> None:
    lines, _ = split_lines(b"", _event(0) + b'data: {"error": {"message": "boom"}}\n\n')
    with pytest.raises(EngineError, match="boom") as raised:
        chunks_of_lines(lines, 0.0, 0, started=False)
    assert raised.value.started
