"""The sim server's engine driver treats a stalled process as a stalled engine (sim/server/driver.py)."""

import pytest
from sloguard_testing.sim_engine import toy_step_time

from sloguard.sim.engine import Engine, EngineConfig, SimRequest
from sloguard.sim.server.driver import MAX_STALL_WALL_S, EngineDriver, RequestHandle
from sloguard.sim.server.metrics import VllmMetrics


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def make_driver(time_scale: float) -> tuple[EngineDriver, FakeClock]:
    config = EngineConfig(num_gpu_blocks=64, block_size=16, max_num_seqs=8, max_model_len=512)
    engine = Engine(config, toy_step_time())
    clock = FakeClock()
    return EngineDriver(engine, VllmMetrics("tiny", 512, {}), time_scale=time_scale, clock=clock), clock


@pytest.mark.parametrize(
    ("time_scale", "wall_steps_s", "expected_virtual_s"),
    [
        (1.0, [0.01, 0.02], 0.03),  # ordinary looks: wall time, scaled
        (10.0, [0.01, 0.02], 0.3),
        (1.0, [5.0], MAX_STALL_WALL_S),  # a 5 s freeze moves the engine by the cap only
        (10.0, [5.0, 0.01], 10 * (MAX_STALL_WALL_S + 0.01)),  # then it runs on at the scaled rate
        (1.0, [-1.0, 0.01], 0.01),  # a clock that goes back never moves the engine back
    ],
)
def test_virtual_time_follows_the_wall_clock_but_not_across_stalls(
    time_scale: float, wall_steps_s: list[float], expected_virtual_s: float
) -> None:
    driver, clock = make_driver(time_scale)
    start_s = driver.virtual_now()
    for step_s in wall_steps_s:
        clock.now_s += step_s
        now_s = driver.virtual_now()
    assert now_s - start_s == pytest.approx(expected_virtual_s)


def test_tokens_due_during_a_stall_come_out_over_several_looks_not_at_once() -> None:
    driver, clock = make_driver(time_scale=1.0)
    handle = driver.submit(SimRequest("r", prompt_tokens=10, max_tokens=400, ignore_eos=True), 400)
    clock.now_s += 60.0  # long enough for the whole generation, had the engine run meanwhile
    driver.refresh_gauges()
    assert 0 < handle.generated < 400
    assert not driver_finished(handle)
    while not driver_finished(handle):
        clock.now_s += MAX_STALL_WALL_S
        driver.refresh_gauges()
    assert handle.generated == 400


def driver_finished(handle: RequestHandle) -> bool:
    return handle.finished is not None


def test_the_stall_cap_must_be_positive() -> None:
    engine = Engine(
        EngineConfig(num_gpu_blocks=8, block_size=16, max_num_seqs=2, max_model_len=64), toy_step_time()
    )
    with pytest.raises(ValueError, match="max_stall_wall_s"):
        EngineDriver(engine, VllmMetrics("tiny", 64, {}), max_stall_wall_s=0.0)
