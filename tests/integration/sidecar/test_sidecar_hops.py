"""Where a request's TTFT goes inside the sidecar: hop histogram, `GET /debug/hops` and loop lag (issue 8)."""

from pathlib import Path

from sloguard_testing.sidecar_harness import running_sidecar, sse_payloads, wait_until

from sloguard.sidecar.hop_timing import HOP_ORDER

COMPLETION = {"model": "tiny", "prompt": "the quick brown fox", "max_tokens": 4, "stream": True}


async def test_a_streamed_request_is_timed_hop_by_hop_and_summarised_on_the_metrics_port(
    tmp_path: Path,
) -> None:
    async with running_sidecar(tmp_path) as h:
        for _ in range(2):
            async with h.http.post(f"{h.http_url}/v1/completions", json=COMPLETION) as resp:
                assert sse_payloads(await resp.read())[-1] == "[DONE]"
        for hop in HOP_ORDER:
            assert h.sample("sloguard_sidecar_hop_seconds_count", hop=hop.value) == 2, hop
        async with h.http.get(f"{h.metrics_url}/debug/hops") as resp:
            assert resp.status == 200
            summary = await resp.json()
        assert list(summary["hops"]) == [hop.value for hop in HOP_ORDER]
        for figures in summary["hops"].values():
            assert figures["count"] == 2
            assert 0.0 <= figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]

        await wait_until(
            lambda: h.sample("sloguard_event_loop_lag_seconds_count") >= 1, what="a loop-lag sample"
        )
        async with h.http.get(f"{h.metrics_url}/debug/hops") as resp:
            assert (await resp.json())["event_loop_lag"]["count"] >= 1


async def test_a_reset_empties_the_summary_windows_but_not_the_histograms(tmp_path: Path) -> None:
    """The real-vLLM benchmark resets before each run, so a run's figures are its own requests'."""
    async with running_sidecar(tmp_path) as h:
        async with h.http.post(f"{h.http_url}/v1/completions", json=COMPLETION) as resp:
            assert sse_payloads(await resp.read())[-1] == "[DONE]"
        async with h.http.post(f"{h.metrics_url}/debug/hops/reset") as resp:
            assert resp.status == 204
        async with h.http.get(f"{h.metrics_url}/debug/hops") as resp:
            summary = await resp.json()
        for figures in summary["hops"].values():
            assert figures["window"] == 0 and figures["p99_ms"] is None and figures["count"] == 1
        assert h.sample("sloguard_sidecar_hop_seconds_count", hop="front_parse") == 1
        async with h.http.post(f"{h.http_url}/v1/completions", json=COMPLETION) as resp:
            assert sse_payloads(await resp.read())[-1] == "[DONE]"
        async with h.http.get(f"{h.metrics_url}/debug/hops") as resp:
            summary = await resp.json()
        for figures in summary["hops"].values():
            assert figures["window"] == 1 and figures["count"] == 2
        async with h.http.get(f"{h.metrics_url}/debug/hops/reset") as resp:
            assert resp.status == 405  # a GET never changes what the port reports


async def test_a_non_streamed_request_records_no_hops(tmp_path: Path) -> None:
    async with running_sidecar(tmp_path) as h:
        async with h.http.post(f"{h.http_url}/v1/completions", json={**COMPLETION, "stream": False}) as resp:
            assert resp.status == 200
        assert h.sample("sloguard_sidecar_hop_seconds_count", hop="front_parse") == 0
