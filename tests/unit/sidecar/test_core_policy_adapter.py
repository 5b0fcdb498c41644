"""The adapter translates between the lifecycle's policy port and the scheduling core's `Policy` interface.

The core policy here is a recording test double of the interface published in sidecar/core/policy.py.
Where the core's modules are not in this checkout yet, minimal stand-ins for `RequestSpec`, `EngineView`
and `Outcome` are installed for the test only; once merged, the real ones are used.
"""

import importlib
import sys
import types
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pytest

from sloguard.api.errors import RejectionReason
from sloguard.api.sidecar_config import SidecarConfig
from sloguard.api.sloclass import OnUnattainable
from sloguard.sidecar.policy_adapter import CORE_POLICY, CORE_REQUESTS, CorePolicyAdapter, build_policy
from sloguard.sidecar.policy_port import EngineView, PolicyRequest


def _module_available(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        return False
    return True


@pytest.fixture
def core_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    if _module_available(CORE_POLICY) and _module_available(CORE_REQUESTS):
        return

    class InvalidRequestError(ValueError):
        def __init__(self, message: str, reason: RejectionReason = RejectionReason.INVALID_REQUEST) -> None:
            super().__init__(message)
            self.reason = reason

    @dataclass(frozen=True)
    class RequestSpec:
        request_id: str
        slo_class: str
        ttft_s: float
        tpot_s: float
        prompt_tokens: int
        max_tokens: int
        arrival_s: float
        deadline_s: float | None = None
        class_priority: int = 0
        on_unattainable: Any = None
        prompt_text: str | None = None

        def __post_init__(self) -> None:
            if self.max_tokens < 1:
                raise InvalidRequestError("max_tokens must be >= 1")

    @dataclass(frozen=True)
    class CoreEngineView:
        in_flight_cap: int
        kv_free_tokens: int | None = None

    class Outcome(StrEnum):
        COMPLETED = "completed"
        REJECTED = "rejected"
        CANCELLED = "cancelled"
        FAILED = "failed"

    requests = types.ModuleType(CORE_REQUESTS)
    requests.RequestSpec = RequestSpec  # type: ignore[attr-defined]
    requests.InvalidRequestError = InvalidRequestError  # type: ignore[attr-defined]
    requests.Outcome = Outcome  # type: ignore[attr-defined]
    policy = types.ModuleType(CORE_POLICY)
    policy.EngineView = CoreEngineView  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, CORE_REQUESTS, requests)
    monkeypatch.setitem(sys.modules, CORE_POLICY, policy)


@dataclass(frozen=True)
class _Admitted:
    request_id: str
    predicted_output_tokens: float
    predicted_ttft_s: float | None = None
    demoted: bool = False


@dataclass(frozen=True)
class _Rejected:
    request_id: str
    reason: RejectionReason
    retry_after_s: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class _Release:
    request_id: str
    engine_priority: int | None = None


@dataclass(frozen=True)
class _Step:
    releases: tuple[_Release, ...] = ()
    rejections: tuple[_Rejected, ...] = ()


@dataclass
class _Snapshot:
    queued_by_class: dict[str, int]


@dataclass
class RecordingCore:
    """Admits `interactive`, rejects everything else; releases what it holds with vLLM priority -5."""

    name: str = "sloguard"
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)

    def submit(self, spec: Any, now_s: float) -> Any:
        self.calls.append(("submit", spec.request_id, spec.class_priority, now_s))
        if spec.slo_class != "interactive":
            return _Rejected(spec.request_id, RejectionReason.TTFT_UNATTAINABLE, 0.25, "too late")
        self.queued.append(spec.request_id)
        return _Admitted(spec.request_id, predicted_output_tokens=42.0, predicted_ttft_s=0.1)

    def estimate(self, spec: Any, now_s: float) -> Any:
        return _Admitted(spec.request_id, predicted_output_tokens=7.0)

    def release(self, now_s: float, engine: Any) -> Any:
        self.calls.append(("release", engine.in_flight_cap))
        ids, self.queued = self.queued, []
        return _Step(
            releases=tuple(_Release(i, -5) for i in ids[:1]),
            rejections=tuple(_Rejected(i, RejectionReason.DEADLINE_UNATTAINABLE) for i in ids[1:]),
        )

    def on_first_token(self, request_id: str, now_s: float) -> None:
        self.calls.append(("first", request_id))

    def on_tokens(self, request_id: str, now_s: float, output_tokens: int) -> None:
        self.calls.append(("tokens", request_id, output_tokens))

    def on_finish(self, request_id: str, now_s: float, *, outcome: Any, output_tokens: int) -> None:
        self.calls.append(("finish", request_id, str(outcome), output_tokens))

    def cancel(self, request_id: str, now_s: float) -> bool:
        self.calls.append(("cancel", request_id))
        return True

    def snapshot(self) -> Any:
        return _Snapshot({"interactive": len(self.queued)})


def _request(request_id: str, slo_class: str = "interactive", max_tokens: int = 8) -> PolicyRequest:
    return PolicyRequest(
        request_id=request_id,
        slo_class=slo_class,
        ttft_s=1.0,
        tpot_s=0.1,
        deadline_s=None,
        priority=10,
        on_unattainable=OnUnattainable.REJECT,
        prompt_tokens=5,
        max_tokens=max_tokens,
        prompt_text="hi",
        arrival_s=1.0,
    )


@pytest.mark.usefixtures("core_modules")
def test_translation_both_ways() -> None:
    core = RecordingCore()
    adapter = CorePolicyAdapter(core)
    view = EngineView(in_flight=0, in_flight_cap=3)
    admitted = adapter.on_arrival(_request("a"), 1.0, view)
    assert admitted.admitted and admitted.predicted_output_tokens == 42.0 and admitted.predicted_ttft_s == 0.1
    adapter.on_arrival(_request("b"), 1.0, view)
    rejected = adapter.on_arrival(_request("c", "batch"), 1.0, view)
    assert (rejected.admitted, rejected.reason, rejected.retry_after_s) == (
        False,
        RejectionReason.TTFT_UNATTAINABLE,
        0.25,
    )
    assert adapter.queue_depth_by_class() == {"interactive": 2}
    step = adapter.release(2.0, view)
    assert step.start == ["a"] and step.engine_priority == {"a": 5}  # vLLM -5 back to our +5
    assert step.reject == [("b", RejectionReason.DEADLINE_UNATTAINABLE)]
    adapter.on_first_token("a", 2.1)
    adapter.on_tokens("a", 2.2, 3)
    adapter.on_finish("a", 2.3, "completed", 3)
    adapter.on_finish("x", 2.3, "cancelled", 1)  # the core wants cancel(), not on_finish, for a cancel
    assert core.calls[-5:] == [
        ("release", 3),
        ("first", "a"),
        ("tokens", "a", 3),
        ("finish", "a", "completed", 3),
        ("cancel", "x"),
    ]


@pytest.mark.usefixtures("core_modules")
def test_a_spec_the_core_refuses_becomes_a_rejection() -> None:
    adapter = CorePolicyAdapter(RecordingCore())
    answer = adapter.on_arrival(_request("a", max_tokens=0), 1.0, EngineView(in_flight=0, in_flight_cap=1))
    assert not answer.admitted and answer.reason == RejectionReason.INVALID_REQUEST


@pytest.mark.usefixtures("core_modules")
def test_build_policy_uses_the_core_factory_when_given() -> None:
    config = SidecarConfig.model_validate({"classes": [{"name": "interactive", "ttft_s": 1, "tpot_s": 0.1}]})
    built = build_policy(config, core_factory=lambda _: RecordingCore())
    assert (built.requested, built.effective) == ("sloguard", "sloguard")
    assert isinstance(built.policy, CorePolicyAdapter)
