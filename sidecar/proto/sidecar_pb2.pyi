from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SLOTargets(_message.Message):
    __slots__ = ("ttft_ms", "tpot_ms", "deadline_ms")
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    TPOT_MS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    ttft_ms: float
    tpot_ms: float
    deadline_ms: float
    def __init__(self, ttft_ms: _Optional[float] = ..., tpot_ms: _Optional[float] = ..., deadline_ms: _Optional[float] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("temperature", "top_p", "top_k", "seed", "stop", "ignore_eos", "min_tokens", "repetition_penalty")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    IGNORE_EOS_FIELD_NUMBER: _ClassVar[int]
    MIN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REPETITION_PENALTY_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    top_k: int
    seed: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    ignore_eos: bool
    min_tokens: int
    repetition_penalty: float
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., seed: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., ignore_eos: _Optional[bool] = ..., min_tokens: _Optional[int] = ..., repetition_penalty: _Optional[float] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("request_id", "slo_class", "targets", "text", "token_ids", "max_tokens", "sampling", "model")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SLO_CLASS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    slo_class: str
    targets: SLOTargets
    text: str
    token_ids: TokenIds
    max_tokens: int
    sampling: SamplingParams
    model: str
    def __init__(self, request_id: _Optional[str] = ..., slo_class: _Optional[str] = ..., targets: _Optional[_Union[SLOTargets, _Mapping]] = ..., text: _Optional[str] = ..., token_ids: _Optional[_Union[TokenIds, _Mapping]] = ..., max_tokens: _Optional[int] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., model: _Optional[str] = ...) -> None: ...

class TokenIds(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("request_id", "text", "tokens", "completion_tokens", "time_since_arrival_ms", "first", "finish_reason", "prompt_tokens")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TIME_SINCE_ARRIVAL_MS_FIELD_NUMBER: _ClassVar[int]
    FIRST_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    text: str
    tokens: int
    completion_tokens: int
    time_since_arrival_ms: float
    first: bool
    finish_reason: str
    prompt_tokens: int
    def __init__(self, request_id: _Optional[str] = ..., text: _Optional[str] = ..., tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., time_since_arrival_ms: _Optional[float] = ..., first: _Optional[bool] = ..., finish_reason: _Optional[str] = ..., prompt_tokens: _Optional[int] = ...) -> None: ...

class EstimateResponse(_message.Message):
    __slots__ = ("admitted", "reason", "predicted_ttft_ms", "predicted_tpot_ms", "predicted_output_tokens", "retry_after_ms", "explanation")
    ADMITTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_TPOT_MS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    admitted: bool
    reason: str
    predicted_ttft_ms: float
    predicted_tpot_ms: float
    predicted_output_tokens: float
    retry_after_ms: float
    explanation: str
    def __init__(self, admitted: _Optional[bool] = ..., reason: _Optional[str] = ..., predicted_ttft_ms: _Optional[float] = ..., predicted_tpot_ms: _Optional[float] = ..., predicted_output_tokens: _Optional[float] = ..., retry_after_ms: _Optional[float] = ..., explanation: _Optional[str] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClassState(_message.Message):
    __slots__ = ("slo_class", "queue_depth", "in_flight")
    SLO_CLASS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    slo_class: str
    queue_depth: int
    in_flight: int
    def __init__(self, slo_class: _Optional[str] = ..., queue_depth: _Optional[int] = ..., in_flight: _Optional[int] = ...) -> None: ...

class GetStateResponse(_message.Message):
    __slots__ = ("pool", "policy", "classes", "in_flight_cap", "min_in_flight", "max_in_flight", "cap_overridden", "engine_healthy", "draining", "predictor_healthy", "latency_model_healthy", "config_hash", "predictor")
    POOL_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_CAP_FIELD_NUMBER: _ClassVar[int]
    MIN_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    CAP_OVERRIDDEN_FIELD_NUMBER: _ClassVar[int]
    ENGINE_HEALTHY_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    PREDICTOR_HEALTHY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MODEL_HEALTHY_FIELD_NUMBER: _ClassVar[int]
    CONFIG_HASH_FIELD_NUMBER: _ClassVar[int]
    PREDICTOR_FIELD_NUMBER: _ClassVar[int]
    pool: str
    policy: str
    classes: _containers.RepeatedCompositeFieldContainer[ClassState]
    in_flight_cap: int
    min_in_flight: int
    max_in_flight: int
    cap_overridden: bool
    engine_healthy: bool
    draining: bool
    predictor_healthy: bool
    latency_model_healthy: bool
    config_hash: str
    predictor: str
    def __init__(self, pool: _Optional[str] = ..., policy: _Optional[str] = ..., classes: _Optional[_Iterable[_Union[ClassState, _Mapping]]] = ..., in_flight_cap: _Optional[int] = ..., min_in_flight: _Optional[int] = ..., max_in_flight: _Optional[int] = ..., cap_overridden: _Optional[bool] = ..., engine_healthy: _Optional[bool] = ..., draining: _Optional[bool] = ..., predictor_healthy: _Optional[bool] = ..., latency_model_healthy: _Optional[bool] = ..., config_hash: _Optional[str] = ..., predictor: _Optional[str] = ...) -> None: ...

class SetLimitsRequest(_message.Message):
    __slots__ = ("in_flight_cap", "min_in_flight", "max_in_flight", "clear_override")
    IN_FLIGHT_CAP_FIELD_NUMBER: _ClassVar[int]
    MIN_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    CLEAR_OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    in_flight_cap: int
    min_in_flight: int
    max_in_flight: int
    clear_override: bool
    def __init__(self, in_flight_cap: _Optional[int] = ..., min_in_flight: _Optional[int] = ..., max_in_flight: _Optional[int] = ..., clear_override: _Optional[bool] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("grace_ms",)
    GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    grace_ms: float
    def __init__(self, grace_ms: _Optional[float] = ...) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ("in_flight", "queued")
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    in_flight: int
    queued: int
    def __init__(self, in_flight: _Optional[int] = ..., queued: _Optional[int] = ...) -> None: ...
