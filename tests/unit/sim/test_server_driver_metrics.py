"""The server's engine driver on a fake clock: vLLM's metric semantics (vllm-behaviour.md §2.3, §3.7)."""

from sloguard_testing.sim_engine import toy_step_time

from sloguard.sim.engine import Engine, EngineConfig, SimRequest
from sloguard.sim.server.driver import EngineDriver
from sloguard.sim.server.metrics import VllmMetrics, token_buckets

LABELS = {"engine": "0", "model_name": "tiny"}


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def make_driver(**config: object) -> tuple[EngineDriver, FakeClock, VllmMetrics]:
    cfg: dict[str, object] = {"num_gpu_blocks": 5, "block_size": 128, "max_num_seqs": 8, "max_model_len": 512}
    cfg.update(config)
    engine = Engine(EngineConfig(**cfg), toy_step_time())  # type: ignore[arg-type]
    metrics = VllmMetrics("tiny", 512, {"block_size": "128"})
    clock = FakeClock()
    return EngineDriver(engine, metrics, clock=clock), clock, metrics


def value(metrics: VllmMetrics, name: str, **labels: str) -> float:
    v = metrics.registry.get_sample_value(name, {**LABELS, **labels})
    assert v is not None, name
    return v


def test_preemptions_are_counted_when_the_victim_next_produces_output() -> None:
    driver, clock, metrics = make_driver(scheduling_policy="priority")
    handles = {}
    for i, (rid, prio) in enumerate([("A", 0), ("B", 10), ("C", 5)]):
        clock.now_s = i * 0.02
        req = SimRequest(rid, prompt_tokens=100, max_tokens=300, ignore_eos=True, priority=prio)
        handles[rid] = driver.submit(req, 300)
    saw_lag = False
    while any(h.finished is None for h in handles.values()):
        clock.now_s += 0.002
        driver.refresh_gauges()
        engine_count = driver.engine.snapshot().num_preemptions_total
        counted = value(metrics, "vllm:num_preemptions_total")
        assert counted <= engine_count
        saw_lag |= counted < engine_count
    assert saw_lag
    total = driver.engine.snapshot().num_preemptions_total
    assert total >= 2 and value(metrics, "vllm:num_preemptions_total") == total
    assert value(metrics, "vllm:prompt_tokens_total") == 300  # re-prefill is not counted
    assert value(metrics, "vllm:request_num_preemptions_sum") == total
    assert value(metrics, "vllm:request_num_preemptions_count") == 3
    assert value(metrics, "vllm:generation_tokens_total") == 900
    assert value(metrics, "vllm:inter_token_latency_seconds_count") == 3 * 299
    assert value(metrics, "vllm:request_success_total", finished_reason="length") == 3


def test_aborted_requests_count_tokens_but_never_success() -> None:
    driver, clock, metrics = make_driver(max_num_seqs=1)
    running = driver.submit(SimRequest("run", prompt_tokens=10, max_tokens=400, ignore_eos=True), 400)
    waiting = driver.submit(SimRequest("wait", prompt_tokens=10, max_tokens=400, ignore_eos=True), 400)
    while running.generated < 10:
        clock.now_s += 0.005
        driver.refresh_gauges()
    assert waiting.generated == 0
    driver.abort("wait")
    driver.abort("run")
    driver.refresh_gauges()
    assert value(metrics, "vllm:num_requests_running") == 0
    assert value(metrics, "vllm:num_requests_waiting") == 0
    assert value(metrics, "vllm:kv_cache_usage_perc") == 0
    assert value(metrics, "vllm:generation_tokens_total") == running.generated
    assert value(metrics, "vllm:prompt_tokens_total") == 10  # the waiting one left no trace
    assert value(metrics, "vllm:time_to_first_token_seconds_count") == 1
    assert value(metrics, "vllm:e2e_request_latency_seconds_count") == 0
    for reason in ["stop", "length", "abort", "error", "repetition"]:
        assert value(metrics, "vllm:request_success_total", finished_reason=reason) == 0


def test_token_buckets_are_a_1_2_5_series_capped_at_max_model_len() -> None:
    assert token_buckets(512) == [1, 2, 5, 10, 20, 50, 100, 200, 500]
    assert token_buckets(1000)[-1] == 1000
