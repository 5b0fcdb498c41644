"""RecentTpotRatios (sidecar/core/tpot_ratios.py): the share above a threshold over the last `size`."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sloguard.sidecar.core.tpot_ratios import RecentTpotRatios


@pytest.mark.parametrize(
    ("ratios", "threshold", "share"),
    [
        ([], 1.0, 0.0),  # nothing seen: no evidence of misses
        ([0.9, 1.0, 1.1, 1.2], 1.0, 0.5),  # strictly above
        ([0.9, 1.0, 1.1, 1.2], 0.5, 1.0),
        ([0.9, 1.0, 1.1, 1.2], 1.2, 0.0),
        ([5.0, 0.9, 1.0, 1.1, 1.2], 1.0, 0.5),  # size 4: the oldest (5.0) has left
    ],
)
def test_share_above(ratios: list[float], threshold: float, share: float) -> None:
    recent = RecentTpotRatios(size=4)
    for r in ratios:
        recent.observe(r)
    assert recent.share_above(threshold) == share
    assert len(recent) == min(4, len(ratios))


def test_a_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="size"):
        RecentTpotRatios(size=0)


@settings(max_examples=150, deadline=None)
@given(
    ratios=st.lists(st.floats(min_value=0.0, max_value=10.0), max_size=80),
    threshold=st.floats(min_value=0.0, max_value=10.0),
    size=st.integers(min_value=1, max_value=16),
)
def test_share_matches_a_brute_force_count_of_the_latest(
    ratios: list[float], threshold: float, size: int
) -> None:
    recent = RecentTpotRatios(size=size)
    for r in ratios:
        recent.observe(r)
    latest = ratios[-size:]
    expected = sum(r > threshold for r in latest) / len(latest) if latest else 0.0
    assert recent.share_above(threshold) == pytest.approx(expected)
