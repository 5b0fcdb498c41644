"""`sloguard sim serve --time-scale`: engine time runs faster than wall time, and the server's latency
metrics are in engine time, so they equal the profile's step times whatever the wall clock did."""

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sloguard_testing.engine_servers import start_engine_server

from sloguard.sim.engine import BatchShape
from sloguard.sim.profiles import load_profile


@pytest.mark.parametrize("time_scale", [1.0, 50.0])
async def test_ttft_and_itl_metrics_are_engine_time_step_costs(time_scale: float) -> None:
    server = await start_engine_server("sim", time_scale=time_scale)
    try:
        body = {"prompt": list(range(100)), "max_tokens": 3, "ignore_eos": True}
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.base_url}/v1/completions", json=body) as resp:
                assert resp.status == 200
            async with s.get(f"{server.base_url}/metrics") as resp:
                text = await resp.text()
    finally:
        await server.stop()
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    st = load_profile("llama-3-8b-h100").step_time()
    assert values["vllm:time_to_first_token_seconds_sum"] == pytest.approx(
        st.step_s(BatchShape(0, 0, [(100, 0)])), rel=1e-9
    )
    expected_itl = st.step_s(BatchShape(1, 101)) + st.step_s(BatchShape(1, 102))
    assert values["vllm:inter_token_latency_seconds_sum"] == pytest.approx(expected_itl, rel=1e-9)
