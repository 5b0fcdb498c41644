"""The lifecycle asks the relay hold with its own queue (sidecar/lifecycle.py `_read_hold_s`): a stream is
left unread only while requests wait in the sidecar, unless the configuration says always."""

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
        lifecycle._request_pump()  # a round is pending: the next arrival waits in the queue for it
        waiting = lifecycle._admit(ServeRequest(endpoint="completions", body={}, request_id="b"), 0.0)
        assert waiting.start is not None and not waiting.start.done()
        assert lifecycle._read_hold_s(streaming) == pytest.approx(0.025, abs=1e-3)
