"""The sidecar runs one release round per turn of the event loop (sidecar/lifecycle.py `_request_pump`)."""

import asyncio

import aiohttp
import pytest

from sloguard.api.sidecar_config import SidecarConfig
from sloguard.sidecar.engine_client import EngineClient
from sloguard.sidecar.lifecycle import Lifecycle, ServeRequest
from sloguard.sidecar.metrics import SidecarMetrics


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
