"""SidecarMetrics bookkeeping: a running attainment count (O(1) per end) and cached per-class gauges."""

from hypothesis import given, settings
from hypothesis import strategies as st

from sloguard.sidecar.metrics import SidecarMetrics

ENDS = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=3.0), st.booleans(), st.sampled_from(["a", "b"])),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(ends=ENDS, window_s=st.floats(min_value=0.5, max_value=10.0))
def test_the_ratio_equals_met_over_ended_inside_the_window(
    ends: list[tuple[float, bool, str]], window_s: float
) -> None:
    metrics = SidecarMetrics("p")
    now_s = 0.0
    seen: list[tuple[float, bool, str]] = []
    for step_s, met, slo_class in ends:
        now_s += step_s
        seen.append((now_s, met, slo_class))
        metrics.record_end(
            slo_class, outcome="completed", reason="stop", met_slo=met, now_s=now_s, window_s=window_s
        )
        inside = [m for t, m, c in seen if c == slo_class and t >= now_s - window_s]
        got = metrics.registry.get_sample_value(
            "sloguard_slo_attainment_ratio", {"pool": "p", "slo_class": slo_class}
        )
        assert got == sum(inside) / len(inside)


def test_a_removed_class_starts_again_from_nothing() -> None:
    metrics = SidecarMetrics("p")
    metrics.set_classes(["a"])
    metrics.record_end("a", outcome="completed", reason="stop", met_slo=True, now_s=1.0, window_s=60.0)
    metrics.set_classes([])
    metrics.set_classes(["a"])
    metrics.record_end("a", outcome="failed", reason="engine_error", met_slo=False, now_s=2.0, window_s=60.0)
    assert (
        metrics.registry.get_sample_value("sloguard_slo_attainment_ratio", {"pool": "p", "slo_class": "a"})
        == 0.0
    )


def test_cached_class_gauges_follow_a_class_removed_and_added_again() -> None:
    metrics = SidecarMetrics("p")
    metrics.set_classes(["a"])
    metrics.class_gauges_of("a").queue_depth.set(3)
    metrics.set_classes([])
    assert metrics.registry.get_sample_value("sloguard_queue_depth", {"pool": "p", "slo_class": "a"}) is None
    metrics.set_classes(["a"])
    metrics.class_gauges_of("a").queue_depth.set(5)  # a stale cached child: detached, not exported
    assert metrics.registry.get_sample_value("sloguard_queue_depth", {"pool": "p", "slo_class": "a"}) == 5
