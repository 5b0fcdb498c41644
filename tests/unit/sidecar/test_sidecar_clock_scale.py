"""`sloguard sidecar --clock-scale X`: the sidecar's clock X times faster, as `sim serve --time-scale`."""

import time

import pytest

from sloguard.cli import main
from sloguard.sidecar import command


def test_scale_one_is_the_monotonic_clock_itself() -> None:
    assert command.scaled_clock(1.0) is time.monotonic


@pytest.mark.parametrize("scale", [0.5, 2.0, 10.0])
def test_a_scaled_clock_advances_scale_times_faster(monkeypatch: pytest.MonkeyPatch, scale: float) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    clock = command.scaled_clock(scale)
    start = clock()
    now[0] += 3.0
    assert clock() - start == pytest.approx(3.0 * scale)


@pytest.mark.parametrize("scale", ["0", "-2"])
def test_a_nonpositive_scale_is_refused(scale: str) -> None:
    assert main(["sidecar", "--config", "/nonexistent.json", "--clock-scale", scale]) == 2
