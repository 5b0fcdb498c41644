"""The sidecar runs one release round per turn of the event loop (sidecar/lifecycle.py `_request_pump`), and
ends the requests a round gives up."""

import asyncio

import aiohttp
import pytest

from sloguard.api.errors import RejectionReason
from sloguard.api.metric_names import TPOT_GATE_GIVEUPS_TOTAL
from sloguard.api.sidecar_config import SidecarConfig
from sloguard.sidecar.engine_client import EngineClient
from sloguard.sidecar.errors import (
    GATE_HELD_DETAIL,
    GAVE_UP_QUEUED_DETAIL,
    RequestRejected,
    gave_up_queued_detail,
)
from sloguard.sidecar.lifecycle import Lifecycle, ServeRequest
from sloguard.sidecar.metrics import SidecarMetrics
from sloguard.sidecar.policy_port import Admission, EngineView, FinishOutcome, PolicyRequest, Release


def _config(policy: str = "sloguard") -> SidecarConfig:
    return SidecarConfig.model_validate(
        {
            "pool": {"name": "p"},
            "classes": [{"name": "c", "ttft_s": 1.0, "tpot_s": 0.1, "default": True}],
            "policy": {"name": policy},
            "engine": {"url": "http://127.0.0.1:9"},
        }
    )


def _counting(lifecycle: Lifecycle) -> list[int]:
    rounds = [0]
    real = lifecycle._pump

    def pump() -> None:
        rounds[0] += 1
        real()

    lifecycle._pump = pump  # type: ignore[method-assign]
    return rounds


@pytest.mark.parametrize("asks", [1, 2, 50])
async def test_asks_within_one_turn_share_one_round(asks: int) -> None:
    async with aiohttp.ClientSession() as session:
        lifecycle = Lifecycle(_config(), EngineClient(session, "http://127.0.0.1:9"), SidecarMetrics("p"))
        rounds = _counting(lifecycle)
        for _ in range(asks):  # a burst of arrivals and ends in one turn of the loop
            lifecycle._request_pump()
        assert rounds[0] == 0  # none yet: the round runs at the next turn
        await asyncio.sleep(0)
        assert rounds[0] == 1
        lifecycle._request_pump()  # a later turn asks again: a round of its own
        await asyncio.sleep(0)
        assert rounds[0] == 2


def test_outside_an_event_loop_the_round_runs_at_once() -> None:
    async def build() -> Lifecycle:
        async with aiohttp.ClientSession() as session:
            return Lifecycle(_config(), EngineClient(session, "http://127.0.0.1:9"), SidecarMetrics("p"))

    lifecycle = asyncio.run(build())
    rounds = _counting(lifecycle)
    lifecycle._request_pump()
    assert rounds[0] == 1


async def test_an_arrival_at_an_empty_queue_is_released_in_its_own_turn() -> None:
    async with aiohttp.ClientSession() as session:
        lifecycle = Lifecycle(
            _config("fcfs"), EngineClient(session, "http://127.0.0.1:9"), SidecarMetrics("p")
        )
        lifecycle.engine_up = True
        rounds = _counting(lifecycle)
        first = lifecycle._admit(ServeRequest(endpoint="completions", body={}, request_id="a"), 0.0)
        assert first.start is not None and first.start.done()  # released before this turn ends
        assert rounds[0] == 1
        lifecycle._request_pump()  # an end in this turn asks for a round: the next arrival waits for it
        second = lifecycle._admit(ServeRequest(endpoint="completions", body={}, request_id="b"), 0.0)
        assert second.start is not None and not second.start.done()
        assert rounds[0] == 1
        await asyncio.sleep(0)
        assert second.start.done() and rounds[0] == 2


class _GateHeldPolicy:
    """Admits everything; each release round gives every queued request up, `holds` rounds of which its
    TPOT gate held it back."""

    name = "gate-held"

    def __init__(self, holds: dict[str, int]) -> None:
        self.holds = holds
        self.queued: list[str] = []

    def estimate(self, request: PolicyRequest, now_s: float, view: EngineView) -> Admission:
        return Admission(admitted=True)

    def on_arrival(self, request: PolicyRequest, now_s: float, view: EngineView) -> Admission:
        self.queued.append(request.request_id)
        return Admission(admitted=True)

    def release(self, now_s: float, view: EngineView) -> Release:
        given_up, self.queued = self.queued, []
        reject = [(rid, RejectionReason.TTFT_UNATTAINABLE) for rid in given_up]
        return Release(
            reject=reject, gate_holds={rid: self.holds[rid] for rid in given_up if self.holds[rid]}
        )

    def on_cancel(self, request_id: str, now_s: float) -> None: ...
    def on_first_token(self, request_id: str, now_s: float) -> None: ...
    def on_tokens(self, request_id: str, now_s: float, output_tokens: int) -> None: ...
    def on_finish(
        self, request_id: str, now_s: float, outcome: FinishOutcome, output_tokens: int
    ) -> None: ...

    def queue_depth_by_class(self) -> dict[str, int]:
        return {}


async def test_a_request_the_tpot_gate_held_back_is_told_apart_when_given_up() -> None:
    """The round's give-ups end their requests with the policy's reason; those the TPOT gate had held back
    say so in their message and count in `sloguard_tpot_gate_giveups_total`, per class."""
    async with aiohttp.ClientSession() as session:
        metrics = SidecarMetrics("p")
        lifecycle = Lifecycle(_config(), EngineClient(session, "http://127.0.0.1:9"), metrics)
        lifecycle.engine_up = True
        lifecycle.policy = _GateHeldPolicy({"held": 4, "waited": 0})
        tracked = {
            rid: lifecycle._admit(ServeRequest(endpoint="completions", body={}, request_id=rid), 0.0)
            for rid in ("held", "waited")
        }
        await asyncio.sleep(0)
        errors = {}
        for rid, t in tracked.items():
            assert t.start is not None and t.start.done()
            error = t.start.exception()
            assert isinstance(error, RequestRejected)
            errors[rid] = (error.reason, error.message)
    assert errors == {
        "held": (RejectionReason.TTFT_UNATTAINABLE, gave_up_queued_detail(4)),
        "waited": (RejectionReason.TTFT_UNATTAINABLE, GAVE_UP_QUEUED_DETAIL),
    }
    assert GATE_HELD_DETAIL in gave_up_queued_detail(4) and "4 release rounds" in gave_up_queued_detail(4)
    counted = metrics.registry.get_sample_value(f"{TPOT_GATE_GIVEUPS_TOTAL}", {"pool": "p", "slo_class": "c"})
    assert counted == 1.0
