"""Small InferencePool and SLOClass objects for the operator's unit tests."""

from typing import Any

from sloguard.api.inferencepool import InferencePool
from sloguard.api.sloclass import SLOClass

UID = "0f6c1c9e-0000-4000-8000-000000000001"


def make_pool(**spec: Any) -> InferencePool:
    base: dict[str, Any] = {
        "model": "meta-llama/Llama-3-8B",
        "engine": {"image": "vllm/vllm-openai:v0.11.0"},
        "sloClasses": ["interactive"],
    }
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return InferencePool.model_validate(
        {"metadata": {"name": "llama", "namespace": "serving", "uid": UID, "generation": 3}, "spec": base}
    )


def make_class(name: str = "interactive", **spec: Any) -> SLOClass:
    return SLOClass.model_validate(
        {"metadata": {"name": name}, "spec": {"ttft": "500ms", "tpot": "50ms", **spec}}
    )
