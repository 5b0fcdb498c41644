"""The non-streamed OpenAI answer SLOGuard speaks: vLLM 0.32's layout, member for member and in its order.

Part of the contract because clients see it through the sidecar's HTTP front exactly as vLLM sends it
(`../shared/reference/vllm-behaviour.md` §1.1). Two callers build it: the sidecar's relay
(`sloguard.sidecar.relay`, from the streamed chunks it collected) and the simulated engine's server
(`sloguard.sim.server.app`), so both stay identical to each other and to a live vLLM (compared by the
end-to-end and API conformance tests). Plain dictionaries; no I/O.
"""

from typing import Any

_CHAT_TAIL: dict[str, Any] = {"prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None}
_ENGINE_TAIL: dict[str, Any] = {"kv_transfer_params": None, "ec_transfer_params": None, "metrics": None}


def unary_choice(*, chat: bool, text: str, finish_reason: str | None, stop_reason: Any) -> dict[str, Any]:
    """The single choice of a non-streamed chat or text completion."""
    if chat:
        return {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": text,
                "refusal": None,
                "annotations": None,
                "audio": None,
                "function_call": None,
                "reasoning": None,
            },
            "logprobs": None,
            "finish_reason": finish_reason,
            "stop_reason": stop_reason,
            "token_ids": None,
            "routed_experts": None,
        }
    return {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": finish_reason,
        "stop_reason": stop_reason,
        "token_ids": None,
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "routed_experts": None,
    }


def unary_usage(
    prompt_tokens: int,
    completion_tokens: int,
    *,
    total_tokens: int | None = None,
    prompt_tokens_details: Any = None,
) -> dict[str, Any]:
    """The `usage` member of a non-streamed answer."""
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens if total_tokens is None else total_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": prompt_tokens_details,
        "completion_tokens_details": None,
    }


def unary_answer(
    *,
    chat: bool,
    response_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str | None,
    stop_reason: Any,
    fingerprint: str | None,
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    """The whole non-streamed answer body (`chat.completion` or `text_completion`)."""
    return {
        "id": response_id,
        "object": "chat.completion" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": [unary_choice(chat=chat, text=text, finish_reason=finish_reason, stop_reason=stop_reason)],
        "service_tier": None,
        "system_fingerprint": fingerprint,
        "usage": usage,
        **(_CHAT_TAIL if chat else {}),
        **_ENGINE_TAIL,
    }
