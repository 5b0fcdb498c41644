"""Connection failures between the sidecar and its engine, over real sockets: the fake vLLM behind an
EngineLink (tests/sloguard_testing/engine_link.py) that drops requests or closes reused connections.

A keep-alive connection the engine closed is no error and a request whose connection failed before the
engine read it is sent once more on a fresh connection (sidecar/engine_client.py); the engine is down only
when probes fail, never after one refused connection (sidecar/engine_health.py).
"""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sloguard_testing.engine_link import EngineLink
from sloguard_testing.fake_vllm import FakeVllm
from sloguard_testing.sidecar_harness import SidecarHandle, sidecar_in_front, wait_until

COMPLETION = {"model": "tiny", "prompt": "hello", "max_tokens": 3, "stream": False}
# probes only when suspect (a failed request or probe), so that each test decides what probes see
NO_PERIODIC_PROBE_S = 3600.0


@pytest.fixture
async def link() -> AsyncIterator[EngineLink]:
    fake = FakeVllm()
    await fake.start()
    relay = EngineLink.to_url(fake.url)
    await relay.start()
    yield relay
    await relay.stop()
    await fake.stop()


async def _post(side: SidecarHandle) -> tuple[int, str]:
    async with side.http.post(f"{side.http_url}/v1/completions", json=COMPLETION) as response:
        await response.read()
        return response.status, response.headers.get("x-sloguard-reason", "")


def _outcomes(side: SidecarHandle) -> dict[tuple[str, str, str], float]:
    found = {}
    for family in side.sidecar.metrics.registry.collect():
        for s in family.samples:
            if s.name == "sloguard_requests_total" and s.value:
                found[(s.labels["slo_class"], s.labels["outcome"], s.labels["reason"])] = s.value
    return found


async def test_a_keep_alive_connection_the_engine_closed_is_no_error(
    tmp_path: Path, link: EngineLink
) -> None:
    async with sidecar_in_front(tmp_path, link.url, health_interval_s=NO_PERIODIC_PROBE_S) as side:
        assert await _post(side) == (200, "")  # leaves its connection in the sidecar's pool
        link.close_reused()  # the engine closes idle connections as the next request is sent on them
        for _ in range(3):
            assert await _post(side) == (200, "")
        assert link.dropped >= 1  # the pooled connection was closed under a request...
        assert side.sidecar.engine_client.retried == link.dropped  # ...which went again, on a fresh one
        health = side.sidecar.lifecycle.health
        assert health.up and health.probe_failures == 0 and not health.probe_due
        assert _outcomes(side) == {("interactive", "completed", ""): 4}


async def test_a_request_reset_before_the_engine_read_it_is_retried_once(
    tmp_path: Path, link: EngineLink
) -> None:
    async with sidecar_in_front(tmp_path, link.url, health_interval_s=NO_PERIODIC_PROBE_S) as side:
        link.drop_next(1)
        assert await _post(side) == (200, "")
        assert (link.dropped, side.sidecar.engine_client.retried) == (1, 1)
        link.drop_next(2)  # the retry fails too: the request fails, but only once is it sent again
        assert await _post(side) == (503, "engine_unavailable")
        assert (link.dropped, side.sidecar.engine_client.retried) == (3, 2)
        # one unreachable request is no verdict: the engine stays up, a probe is due and finds it well
        assert side.sidecar.lifecycle.engine_up
        await wait_until(lambda: not side.sidecar.lifecycle.health.suspect, what="the due probe")
        assert side.sidecar.lifecycle.engine_up and side.sidecar.ready()
        assert await _post(side) == (200, "")
        assert _outcomes(side) == {
            ("interactive", "completed", ""): 2,
            ("interactive", "failed", "engine_unavailable"): 1,
        }


async def test_the_engine_is_down_when_probes_fail_and_back_when_one_succeeds(
    tmp_path: Path, link: EngineLink
) -> None:
    async with sidecar_in_front(tmp_path, link.url, health_interval_s=NO_PERIODIC_PROBE_S) as side:
        await link.down()
        assert await _post(side) == (503, "engine_unavailable")  # failed, but not yet a verdict
        assert side.sidecar.lifecycle.engine_up
        await wait_until(lambda: not side.sidecar.lifecycle.engine_up, what="failed probes to mark it down")
        assert side.sidecar.lifecycle.health.probe_failures >= 2
        assert await _post(side) == (503, "engine_unavailable")  # refused up front now
        await link.up()
        await wait_until(side.sidecar.ready, what="a probe to see the engine back")
        assert await _post(side) == (200, "")
        assert _outcomes(side) == {
            ("interactive", "failed", "engine_unavailable"): 1,
            ("interactive", "rejected", "engine_unavailable"): 1,
            ("interactive", "completed", ""): 1,
        }
