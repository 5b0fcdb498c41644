"""Parsing and validating OpenAI-style request bodies the way vLLM 0.32 does, and its error bodies.

Pure helpers for `sloguard.sim.server.app`: every error message, type, param and status below was
measured on vLLM 0.32 (shared/reference/vllm-behaviour.md §1.2 and §5).
"""

import contextlib
import json
import re
import zlib
from dataclasses import dataclass
from typing import Any

_WORD = re.compile(r"\w+|[^\w\s]")
FILLER_WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "and", "runs", "far"]


class ApiError(Exception):
    """An error response: HTTP status and vLLM's {"error": {...}} body."""

    def __init__(self, status: int, message: str, err_type: str, param: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": err_type, "param": param, "code": status}}


def validation_error(detail: str, param: str | None) -> ApiError:
    return ApiError(400, f"1 validation error:\n  {detail}", "Bad Request", param)


def bad_request(message: str, param: str | None) -> ApiError:
    return ApiError(400, message, "BadRequestError", param)


def input_repr(value: Any) -> str:
    """How vLLM's validation errors show an input: containers by size, the rest as text."""
    if isinstance(value, dict | list):
        return f"<{type(value).__name__} of {len(value)} items>"
    return str(value)


def parse_json_body(content_type: str, raw: bytes) -> dict[str, Any]:
    if content_type != "application/json":
        raise validation_error("Unsupported Media Type: Only 'application/json' is allowed", None)
    if not raw.strip():
        raise validation_error(
            "{'type': 'missing', 'loc': 'body', 'msg': 'Field required', 'input': 'None'}", "body"
        )
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        pos = exc.pos if isinstance(exc, json.JSONDecodeError) else 0
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "invalid utf-8"
        raise validation_error(
            f"{{'type': 'json_invalid', 'loc': 'body.{pos}', 'msg': 'JSON decode error', "
            f"'input': '<dict of 0 items>', 'ctx': {{'error': '{msg}'}}}}",
            f"body.{pos}",
        ) from None
    if not isinstance(body, dict):
        raise validation_error(
            f"{{'type': 'model_attributes_type', 'loc': 'body', 'msg': 'Input should be a valid dictionary "
            f"or object to extract fields from', 'input': '{input_repr(body)}'}}",
            "body",
        )
    return body


def int_field(body: dict[str, Any], name: str) -> int | None:
    """Pydantic's lax int: ints, integral floats and integer strings pass; the rest is a 400."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise validation_error(
            f"{{'type': 'int_from_float', 'loc': 'body.{name}', "
            "'msg': 'Input should be a valid integer, got a "
            f"number with a fractional part', 'input': '{value}'}}",
            f"body.{name}",
        )
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise validation_error(
        f"{{'type': 'int_parsing', 'loc': 'body.{name}', "
        "'msg': 'Input should be a valid integer, unable to parse "
        f"string as an integer', 'input': '{value}'}}",
        f"body.{name}",
    )


def prompt_token_ids(prompt: Any) -> tuple[int, ...]:
    """Deterministic stand-in for a tokenizer: one id per word or punctuation mark (a CRC-32 of it, so
    equal text gives equal ids and the prefix cache sees shared prefixes); token-id lists as given."""
    if isinstance(prompt, list):
        if prompt and all(isinstance(t, int) for t in prompt):
            return tuple(prompt)
        if len(prompt) == 1 and isinstance(prompt[0], str):
            return prompt_token_ids(prompt[0])
        if len(prompt) == 1 and isinstance(prompt[0], list):
            return prompt_token_ids(prompt[0])
        raise bad_request("The simulator serves one prompt per request. (parameter=prompt)", "prompt")
    if isinstance(prompt, str):
        return tuple(zlib.crc32(piece.encode()) for piece in _WORD.findall(prompt))
    raise bad_request(
        "Either prompt or prompt_embeds must be provided and non-empty. (parameter=prompt)", "prompt"
    )


def count_prompt_tokens(prompt: Any) -> int:
    """The number of tokens `prompt_token_ids` gives."""
    return len(prompt_token_ids(prompt))


def chat_prompt_tokens(body: dict[str, Any]) -> int:
    """Tokens of the chat template `role: content\\n ... assistant:` over the body's messages."""
    return len(chat_prompt_token_ids(body))


def chat_prompt_token_ids(body: dict[str, Any]) -> tuple[int, ...]:
    """Token ids of the chat template `role: content\\n ... assistant:` over the body's messages."""
    messages = body.get("messages")
    if messages is None:
        raise validation_error(
            "{'type': 'missing', 'loc': 'body.messages', 'msg': 'Field required', "
            f"'input': '{input_repr(body)}'}}",
            "body.messages",
        )
    if messages == []:
        raise bad_request(
            "Cannot apply chat template to an empty conversation. Provide at least one message.", None
        )
    if not isinstance(messages, list):
        raise validation_error(
            "{'type': 'list_type', 'loc': 'body.messages', 'msg': 'Input should be a valid list', "
            f"'input': '{input_repr(messages)}'}}",
            "body.messages",
        )
    text = ""
    for message in messages:
        if not isinstance(message, dict):
            raise bad_request("Each message must be an object with role and content.", "messages")
        content = message.get("content", "")
        if isinstance(content, list):
            content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        text += f"{message.get('role', 'user')}: {content}\n"
    return prompt_token_ids(text + "assistant:")


def filler_text(start: int, end: int) -> str:
    """Deterministic generated text for output tokens start..end-1 (one word per token)."""
    return "".join(" " + FILLER_WORDS[i % len(FILLER_WORDS)] for i in range(start, end))


@dataclass(frozen=True)
class GenerationParams:
    prompt_token_ids: tuple[int, ...]
    prompt_tokens: int
    max_tokens: int  # after vLLM's clamp to max_model_len - prompt
    min_tokens: int
    ignore_eos: bool
    priority: int
    stream: bool
    include_usage: bool
    continuous_usage: bool
    stream_interval: int = 1  # tokens per streamed chunk; the first and the last go out at once


def generation_params(
    body: dict[str, Any], *, chat: bool, max_model_len: int, header_priority: str | None
) -> GenerationParams:
    token_ids = chat_prompt_token_ids(body) if chat else _completion_prompt(body)
    prompt_tokens = len(token_ids)
    if prompt_tokens > max_model_len:
        # vLLM tokenizes text with truncation to max_model_len + 1 ("at least"); token ids count as given.
        text = chat or not isinstance(body.get("prompt"), list) or not _is_token_ids(body["prompt"])
        shown = min(prompt_tokens, max_model_len + 1) if text else prompt_tokens
        qualifier = "at least " if shown == max_model_len + 1 else ""
        raise bad_request(
            f"This model's maximum context length is {max_model_len} tokens. "
            f"However, your prompt contains {qualifier}{shown} input tokens, "
            "which exceeds this limit even without any output tokens. Please reduce "
            f"the length of the input prompt. (parameter=input_tokens, value={shown})",
            "input_tokens",
        )
    max_tokens = int_field(body, "max_completion_tokens") if chat else None
    if max_tokens is None:
        max_tokens = int_field(body, "max_tokens")
    if max_tokens is not None:
        if max_tokens < 1:
            raise bad_request(
                f"max_tokens must be at least 1, got {max_tokens}. "
                f"(parameter=max_tokens, value={max_tokens})",
                "max_tokens",
            )
        if max_tokens > max_model_len:
            raise bad_request(
                f"max_tokens={max_tokens} cannot be greater than max_model_len={max_model_len}. "
                "Please request "
                f"fewer output tokens. (parameter=max_tokens, value={max_tokens})",
                "max_tokens",
            )
    elif not chat:
        max_tokens = 16
    room = max_model_len - prompt_tokens
    if room == 0:  # vLLM clamps max_tokens to the room left, then rejects the 0
        raise bad_request(
            "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)", "max_tokens"
        )
    max_tokens = min(max_tokens if max_tokens is not None else room, room)
    min_tokens = int_field(body, "min_tokens") or 0
    if min_tokens > max_tokens:
        raise bad_request(
            f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {min_tokens}.", None
        )
    priority = int_field(body, "priority") or 0
    if header_priority is not None:
        with contextlib.suppress(ValueError):  # a non-integer header falls back to the body value
            priority = int(header_priority)
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        options = {}
    stream_interval = int_field(body, "stream_interval")
    if stream_interval is not None and stream_interval < 1:
        raise validation_error(
            "{'type': 'greater_than_equal', 'loc': ('body', 'stream_interval'), "
            f"'msg': 'Input should be greater than or equal to 1', 'input': {stream_interval}, "
            "'ctx': {'ge': 1}}",
            "body.stream_interval",
        )
    return GenerationParams(
        prompt_token_ids=token_ids,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        min_tokens=min_tokens,
        ignore_eos=bool(body.get("ignore_eos", False)),
        priority=priority,
        stream=bool(body.get("stream", False)),
        include_usage=bool(options.get("include_usage", False)),
        continuous_usage=bool(options.get("continuous_usage_stats", False)),
        stream_interval=stream_interval or 1,
    )


def _is_token_ids(prompt: list[Any]) -> bool:
    return all(isinstance(t, int) for t in prompt) or (len(prompt) == 1 and isinstance(prompt[0], list))


def _completion_prompt(body: dict[str, Any]) -> tuple[int, ...]:
    prompt = body.get("prompt")
    if prompt == []:
        raise bad_request("You must pass at least one prompt", None)
    if prompt is None or prompt == "":
        raise bad_request(
            "Either prompt or prompt_embeds must be provided and non-empty. (parameter=prompt)", "prompt"
        )
    return prompt_token_ids(prompt)
