"""The local backpressure controller: multiplicative decrease on slow ITL, additive increase if saturated."""

from hypothesis import given
from hypothesis import strategies as st

from sloguard.sidecar.backpressure import AimdCap, AimdSettings


def _window(cap: AimdCap, itl_s: float, tpot_s: float, start_s: float, samples: int = 10) -> None:
    for i in range(samples):
        cap.observe_itl(itl_s, tpot_s, start_s + i * 0.1)
    cap.observe_itl(itl_s, tpot_s, start_s + 1.0)  # closes the window


def test_slow_itl_shrinks_the_cap_multiplicatively_to_the_floor() -> None:
    cap = AimdCap(AimdSettings(min_cap=2, max_cap=16))
    caps = []
    for w in range(8):
        _window(cap, itl_s=0.2, tpot_s=0.1, start_s=w * 2.0)
        caps.append(cap.cap)
    assert caps[0] == 12  # 16 * 0.75
    assert caps == sorted(caps, reverse=True) and caps[-1] == 2
    assert set(caps) <= {12, 9, 6, 4, 3, 2}  # each step is floor(cap * 0.75), never below the floor


def test_fast_itl_grows_the_cap_only_when_saturated() -> None:
    cap = AimdCap(AimdSettings(min_cap=1, max_cap=8), initial_cap=4)
    _window(cap, itl_s=0.01, tpot_s=0.1, start_s=0.0)
    assert cap.cap == 4  # not saturated: demand, not the cap, limited
    cap.note_saturated()
    _window(cap, itl_s=0.01, tpot_s=0.1, start_s=2.0)
    assert cap.cap == 5


def test_the_tightest_tpot_in_the_window_decides() -> None:
    cap = AimdCap(AimdSettings(min_cap=1, max_cap=8))
    for i in range(10):
        cap.observe_itl(0.05, 1.0 if i % 2 else 0.04, i * 0.1)
    cap.observe_itl(0.05, 1.0, 1.0)
    assert cap.cap == 6


def test_pin_overrides_and_unpin_restores() -> None:
    cap = AimdCap(AimdSettings(min_cap=1, max_cap=8))
    cap.pin(3)
    _window(cap, itl_s=1.0, tpot_s=0.1, start_s=0.0)
    assert cap.cap == 3 and cap.pinned
    cap.unpin()
    assert cap.cap == 6 and not cap.pinned  # adaptation continued underneath


def test_too_few_samples_change_nothing() -> None:
    cap = AimdCap(AimdSettings(min_cap=1, max_cap=8))
    _window(cap, itl_s=1.0, tpot_s=0.1, start_s=0.0, samples=3)
    assert cap.cap == 8


@given(
    st.lists(st.tuples(st.floats(0.0001, 2.0), st.floats(0.001, 1.0), st.booleans()), max_size=200),
    st.integers(1, 10),
    st.integers(0, 50),
)
def test_the_cap_stays_within_bounds(events: list[tuple[float, float, bool]], low: int, extra: int) -> None:
    cap = AimdCap(AimdSettings(min_cap=low, max_cap=low + extra, min_samples=1, window_s=0.05))
    for i, (itl_s, tpot_s, saturated) in enumerate(events):
        if saturated:
            cap.note_saturated()
        cap.observe_itl(itl_s, tpot_s, i * 0.02)
        assert low <= cap.cap <= low + extra
