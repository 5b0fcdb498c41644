"""RecentArrivals (sidecar/core/recent_arrivals.py): per-target window counts equal a brute-force count."""

from hypothesis import given, settings
from hypothesis import strategies as st

from sloguard.sidecar.core.recent_arrivals import RecentArrivals, TargetCounts

TARGETS = [(0.1, 0.02), (0.5, 0.05), (2.0, 0.1)]


def test_counts_per_target_group_in_a_window() -> None:
    recent = RecentArrivals()
    for at_s in (0.0, 0.2, 0.4, 0.9):
        recent.add(at_s, ttft_s=0.5, tpot_s=0.05)
    recent.add(0.95, ttft_s=0.1, tpot_s=0.02)
    got = sorted(recent.window(1.0, 0.85), key=lambda g: g.ttft_s)
    # (0.15, 1.0]: 0.2, 0.4 and 0.9 of the first group (0.2 and 0.4 over 0.5 s before 1.0), 0.95 of the second
    assert got == [TargetCounts(0.1, 0.02, 1, 0), TargetCounts(0.5, 0.05, 3, 2)]
    assert list(recent.window(10.0, 1.0)) == []  # nothing in (9, 10]


@settings(max_examples=150, deadline=None)
@given(
    arrivals=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=50.0), st.sampled_from(TARGETS)), max_size=60
    ),
    now=st.floats(min_value=0.0, max_value=60.0),
    window=st.floats(min_value=0.0, max_value=60.0),
    cap=st.integers(min_value=1, max_value=8),
)
def test_window_counts_match_a_brute_force_count_over_the_latest_kept(
    arrivals: list[tuple[float, tuple[float, float]]], now: float, window: float, cap: int
) -> None:
    """Out of order arrivals included; each group keeps at least its latest `cap` (the window never sees
    more than it keeps, and never loses one of the latest `cap`)."""
    recent = RecentArrivals(max_per_group=cap)
    for at_s, (ttft_s, tpot_s) in arrivals:
        recent.add(at_s, ttft_s=ttft_s, tpot_s=tpot_s)
    got = {(g.ttft_s, g.tpot_s): g for g in recent.window(now, window)}
    for ttft_s, tpot_s in TARGETS:
        times = sorted(a for a, t in arrivals if t == (ttft_s, tpot_s))
        latest = times[-cap:]
        counted = got.get((ttft_s, tpot_s), TargetCounts(ttft_s, tpot_s, 0, 0))
        in_window = [a for a in times if now - window < a <= now]
        in_latest = [a for a in latest if now - window < a <= now]
        assert len(in_latest) <= counted.arrived <= len(in_window)
        assert 0 <= counted.would_expire <= counted.arrived
        if counted.arrived == len(in_window):
            assert counted.would_expire == sum(a < now - ttft_s for a in in_window)


def test_the_groups_are_bounded_keeping_the_latest() -> None:
    """Per-request targets (headers) can make a new group per request: the oldest groups go."""
    recent = RecentArrivals(max_groups=3)
    for i in range(10):
        recent.add(float(i), ttft_s=1.0 + i, tpot_s=0.05)
    recent.add(10.0, ttft_s=8.0, tpot_s=0.05)  # group 7 again: now the latest
    recent.add(11.0, ttft_s=100.0, tpot_s=0.05)  # a new one evicts the group whose last arrival is oldest
    assert sorted(g.ttft_s for g in recent.window(11.0, 100.0)) == [8.0, 10.0, 100.0]
