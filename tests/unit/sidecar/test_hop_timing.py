"""Per-hop timing and the latency windows behind `GET /debug/hops` (sidecar/hop_timing.py)."""

import pytest

from sloguard.sidecar.hop_timing import HOP_ORDER, Hop, HopTimer, LatencyWindow


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_each_hop_is_timed_from_the_previous_mark_in_hop_order() -> None:
    clock = FakeClock()
    timer = HopTimer(clock)
    for hop, step_s in zip(HOP_ORDER, (0.001, 0.002, 0.004, 0.05, 0.0005), strict=True):
        clock.now_s += step_s
        timer.mark(hop)
    got = dict(timer.durations_s())
    assert list(got) == list(HOP_ORDER)
    assert got == pytest.approx(
        {
            Hop.FRONT_PARSE: 0.001,
            Hop.ADMIT_QUEUE: 0.002,
            Hop.ENGINE_CONNECT: 0.004,
            Hop.ENGINE_FIRST_CHUNK: 0.05,
            Hop.CLIENT_FIRST_WRITE: 0.0005,
        }
    )


def test_a_missing_hop_folds_into_the_next_and_the_first_mark_counts() -> None:
    clock = FakeClock()
    timer = HopTimer(clock)
    clock.now_s += 0.01
    timer.mark(Hop.FRONT_PARSE)
    clock.now_s += 0.03
    timer.mark(Hop.ENGINE_CONNECT)  # no ADMIT_QUEUE mark: its time is in ENGINE_CONNECT
    clock.now_s += 1.0
    timer.mark(Hop.ENGINE_CONNECT)  # a second mark of the same hop changes nothing
    assert dict(timer.durations_s()) == pytest.approx({Hop.FRONT_PARSE: 0.01, Hop.ENGINE_CONNECT: 0.03})


def test_latency_window_summarises_the_recent_samples_in_ms() -> None:
    window = LatencyWindow(size=100)
    empty = window.summary()
    assert empty["count"] == 0 and empty["p99_ms"] is None  # JSON has no NaN
    for i in range(1, 201):  # 1 ms .. 200 ms; the window keeps the last 100 (101 .. 200 ms)
        window.observe(i / 1000.0)
    summary = window.summary()
    assert summary["count"] == 200 and summary["window"] == 100
    assert summary["p50_ms"] == pytest.approx(151.0)
    assert summary["p99_ms"] == pytest.approx(200.0)
    assert summary["max_ms"] == pytest.approx(200.0)
    assert summary["mean_ms"] == pytest.approx(150.5)
    window.clear()
    cleared = window.summary()
    assert cleared["window"] == 0 and cleared["p99_ms"] is None and cleared["count"] == 200


def test_latency_window_needs_room() -> None:
    with pytest.raises(ValueError, match="size"):
        LatencyWindow(size=0)
