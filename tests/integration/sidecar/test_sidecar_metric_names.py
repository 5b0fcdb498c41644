"""A running sidecar exposes every series the autoscaler reads (api/metric_names.py), per configured class.

The operator's Prometheus adapter queries these names; a sidecar that renamed or forgot one would starve
the autoscaler silently, so this scrapes the real /metrics port: at start-up (every configured class's
gauges at 0) and with one request running and one queued (the queue gauges move).
"""

import asyncio
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sloguard_testing.fake_vllm import FakeVllm
from sloguard_testing.sidecar_harness import CLASSES, Harness, running_sidecar, wait_until

from sloguard.api import metric_names as names
from sloguard.sidecar.metrics import SidecarMetrics

HISTOGRAM_SUFFIXES = ("", "_bucket", "_count", "_sum")


async def _scrape(h: Harness) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name -> {sorted labels -> value}."""
    async with h.http.get(f"{h.metrics_url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _value(samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, slo_class: str) -> float:
    key = tuple(sorted({"pool": "test-pool", "slo_class": slo_class}.items()))
    assert key in samples.get(name, {}), f"{name}{{slo_class={slo_class}}} is not exposed"
    return samples[name][key]


async def _post(h: Harness) -> int:
    body = {"model": "tiny", "prompt": "hello there", "max_tokens": 3}
    async with h.http.post(f"{h.http_url}/v1/completions", json=body) as resp:
        await resp.read()
        return resp.status


async def test_every_class_gauge_is_exposed_at_zero_from_start_up(tmp_path: Path) -> None:
    async with running_sidecar(tmp_path) as h:
        samples = await _scrape(h)
        for slo_class in (c["name"] for c in CLASSES):
            for gauge in (
                names.QUEUE_DEPTH,
                names.QUEUE_PREDICTED_TOKENS,
                names.QUEUE_OLDEST_AGE_SECONDS,
                names.IN_FLIGHT,
            ):
                assert _value(samples, gauge, str(slo_class)) == 0.0
            assert _value(samples, names.SLO_ATTAINED_TOTAL, str(slo_class)) == 0.0


async def test_every_sidecar_series_the_autoscaler_reads_is_exposed(tmp_path: Path) -> None:
    fake = FakeVllm()
    fake.release.clear()  # hold generation: one request runs, the next one waits in the sidecar's queue
    limits = {"max_queue_depth": 8, "min_in_flight": 1, "max_in_flight": 1}
    async with running_sidecar(tmp_path, fake, limits=limits) as h:
        pending = [asyncio.create_task(_post(h)) for _ in range(2)]
        await wait_until(lambda: fake.active == 1 and h.sidecar.lifecycle.queued == 1, what="one queued")
        await wait_until(
            lambda: h.sample(names.QUEUE_OLDEST_AGE_SECONDS, slo_class="interactive") > 0, what="age"
        )
        queued = await _scrape(h)
        assert _value(queued, names.QUEUE_DEPTH, "interactive") == 1
        assert _value(queued, names.QUEUE_PREDICTED_TOKENS, "interactive") > 0
        assert _value(queued, names.QUEUE_OLDEST_AGE_SECONDS, "interactive") > 0
        assert _value(queued, names.QUEUE_OLDEST_AGE_SECONDS, "batch") == 0
        fake.release.set()
        assert await asyncio.gather(*pending) == [200, 200]
        samples = await _scrape(h)
        for series in names.SIDECAR_SERIES:
            assert any(series + suffix in samples for suffix in HISTOGRAM_SUFFIXES), f"{series} missing"
        assert _value(samples, names.SLO_ATTAINED_TOTAL, "interactive") == 2
        assert _value(samples, names.QUEUE_OLDEST_AGE_SECONDS, "interactive") == 0
        outcomes = {dict(k)[names.LABEL_OUTCOME] for k in samples[names.REQUESTS_TOTAL]}
        assert outcomes == {names.RequestOutcome.COMPLETED.value}
        assert {o.value for o in names.RequestOutcome} == {"completed", "rejected", "cancelled", "failed"}


def test_an_outcome_outside_the_contract_is_refused() -> None:
    metrics = SidecarMetrics("p")
    with pytest.raises(ValueError, match="succeeded"):
        metrics.record_end("c", outcome="succeeded", reason="", met_slo=False, now_s=0.0, window_s=1.0)
    assert metrics.registry.get_sample_value(names.REQUESTS_TOTAL, {"pool": "p"}) is None


def test_a_class_removed_by_a_reload_loses_its_gauges_and_a_new_one_gets_them() -> None:
    metrics = SidecarMetrics("p")
    metrics.set_classes(["a", "b"])
    metrics.queue_depth.labels("p", "b").set(3)
    metrics.set_classes(["a", "c"])
    for gauge in (names.QUEUE_DEPTH, names.QUEUE_PREDICTED_TOKENS, names.QUEUE_OLDEST_AGE_SECONDS):
        assert metrics.registry.get_sample_value(gauge, {"pool": "p", "slo_class": "b"}) is None
        assert metrics.registry.get_sample_value(gauge, {"pool": "p", "slo_class": "c"}) == 0.0
