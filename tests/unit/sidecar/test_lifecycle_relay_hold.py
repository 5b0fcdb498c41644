"""The lifecycle asks the relay hold with its own queue (sidecar/lifecycle.py `_read_hold_s`): a stream is
left unread only while the last release round left requests waiting in the sidecar, unless the
configuration says always. Arrivals that merely await their round (a burst's, for a turn of the event loop)
do not count: a pass-through sidecar, which holds nothing back, then never holds a stream."""

import asyncio

import aiohttp
import pytest

from sloguard.api.sidecar_config import SidecarConfig
from sloguard.sidecar.engine_client import EngineClient
from sloguard.sidecar.lifecycle import Lifecycle, ServeRequest
from sloguard.sidecar.metrics import SidecarMetrics


def _config(only_while_queued: bool) -> SidecarConfig:
    return SidecarConfig.model_validate(
        {
            "pool": {"name": "p"},
            "classes": [{"name": "c", "ttft_s": 1.0, "tpot_s": 0.1, "default": True}],
            "policy": {"name": "fcfs"},
            "engine": {"url": "http://127.0.0.1:9"},
            "relay": {"hold_max_s": 0.025, "only_while_queued": only_while_queued},
            "limits": {"min_in_flight": 1, "max_in_flight": 1},  # one in flight, the next waits
        }
    )


@pytest.mark.parametrize("only_while_queued", [True, False])
async def test_a_stream_is_held_only_while_requests_wait(only_while_queued: bool) -> None:
    async with aiohttp.ClientSession() as session:
        lifecycle = Lifecycle(
            _config(only_while_queued), EngineClient(session, "http://127.0.0.1:9"), SidecarMetrics("p")
        )
        lifecycle.engine_up = True
        streaming = lifecycle._admit(ServeRequest(endpoint="completions", body={}, request_id="a"), 0.0)
        assert streaming.start is not None and streaming.start.done()  # released: it streams
        streaming.first_token_s = lifecycle.clock()
        streaming.output_tokens = 1
        alone_s = lifecycle._read_hold_s(streaming)
        assert alone_s == (0.0 if only_while_queued else pytest.approx(0.025, abs=1e-3))
        lifecycle._request_pump()  # a round is pending: the next arrival waits for it
        waiting = lifecycle._admit(ServeRequest(endpoint="completions", body={}, request_id="b"), 0.0)
        assert waiting.start is not None and not waiting.start.done()
        assert lifecycle._read_hold_s(streaming) == alone_s  # awaiting its round is not held back
        await asyncio.sleep(0)  # the round: the cap of one holds b back
        assert not waiting.start.done()
        assert lifecycle._read_hold_s(streaming) == pytest.approx(0.025, abs=1e-3)
