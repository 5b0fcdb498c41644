"""PrefillStallHistory (sidecar/core/prefill_stalls.py): the prefill seconds released since a time."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sloguard.sidecar.core.prefill_stalls import PrefillStallHistory


@pytest.mark.parametrize(
    ("from_s", "expected_s"),
    [
        (0.0, 0.7),  # everything
        (1.0, 0.7),  # a release exactly at the start counts
        (1.5, 0.6),
        (3.0, 0.4),
        (3.5, 0.0),  # after the last
    ],
)
def test_since_sums_the_releases_from_a_time_on(from_s: float, expected_s: float) -> None:
    history = PrefillStallHistory()
    for at_s, prefill_s in ((1.0, 0.1), (2.0, 0.2), (3.0, 0.4)):
        history.add(at_s, prefill_s)
    assert history.since(from_s) == pytest.approx(expected_s)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda h: h.add(1.0, -0.1), "prefill_s must be >= 0"),
        (lambda h: (h.add(2.0, 0.1), h.add(1.0, 0.1)), "before the last one"),
    ],
)
def test_bad_releases_are_refused(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(PrefillStallHistory())  # type: ignore[operator]


def test_the_horizon_must_be_positive() -> None:
    with pytest.raises(ValueError, match="horizon_s must be positive"):
        PrefillStallHistory(horizon_s=0.0)


def test_memory_is_bounded_by_one_horizon_of_releases() -> None:
    history = PrefillStallHistory(horizon_s=10.0)
    for i in range(100_000):
        history.add(i * 0.01, 0.001)  # 100 releases a second for 1,000 s
    assert len(history) <= 2 * 1_000 + 1  # at most about two horizons of them
    assert history.since(999.99 - 5.0) == pytest.approx(0.001 * 501)


@given(
    st.lists(
        st.tuples(st.floats(0.0, 5.0), st.floats(0.0, 2.0)),  # (gap since the last release, prefill seconds)
        max_size=60,
    ),
    st.floats(-1.0, 200.0),
    st.floats(0.5, 50.0),
)
def test_since_matches_a_sum_over_the_releases_within_the_horizon(
    releases: list[tuple[float, float]], from_s: float, horizon_s: float
) -> None:
    history = PrefillStallHistory(horizon_s=horizon_s)
    now_s, kept = 0.0, []
    for gap_s, prefill_s in releases:
        now_s += gap_s
        history.add(now_s, prefill_s)
        kept.append((now_s, prefill_s))
    # what a span reaching back at most one horizon sees is exact; further back it may see less
    start_s = max(from_s, now_s - horizon_s)
    exact = sum(p for at, p in kept if at >= start_s)
    assert history.since(start_s) == pytest.approx(exact, abs=1e-9)
    assert history.since(from_s) <= sum(p for at, p in kept if at >= from_s) + 1e-9
