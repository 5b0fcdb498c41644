"""Drain-aware scale-down: which pods get a negative pod-deletion-cost, and which annotations change."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sloguard.operator.core.autoscaling.drain import (
    KEEP_COST,
    PodLoad,
    choose_pods_to_remove,
    cost_patches,
    deletion_costs,
)

A, B, C, D = (PodLoad(n, True, load) for n, load in (("a", 3.0), ("b", 0.0), ("c", 5.0), ("d", 1.0)))


@pytest.mark.parametrize(
    ("pods", "count", "chosen"),
    [
        ([A, B, C, D], 2, ("b", "d")),  # least in-flight work first
        ([A, B, C, D], 0, ()),
        ([A, B, C, D], 9, ("b", "d", "a", "c")),  # more than there are: all, in order
        ([A, PodLoad("x", False, 50.0), C], 1, ("x",)),  # not ready goes first whatever its load
        ([A, PodLoad("u", True, None), C], 2, ("a", "c")),  # no series: kept over pods known to be busy
        ([A, PodLoad("t", True, 0.0, terminating=True)], 1, ("a",)),  # already going: not a candidate
        ([PodLoad("z", True, 1.0), PodLoad("y", True, 1.0)], 1, ("y",)),  # ties by name: stable
        ([], 1, ()),
    ],
)
def test_choice(pods: list[PodLoad], count: int, chosen: tuple[str, ...]) -> None:
    assert choose_pods_to_remove(pods, count) == chosen


def test_negative_count_is_refused() -> None:
    with pytest.raises(ValueError, match="count"):
        choose_pods_to_remove([A], -1)


def test_costs_order_the_chosen_pods_below_the_kept_ones() -> None:
    assert deletion_costs([A, B, C, D], 2) == {"a": KEEP_COST, "b": -2, "c": KEEP_COST, "d": -1}
    assert deletion_costs([A, PodLoad("t", True, 0.0, terminating=True)], 1) == {"a": -1}


@pytest.mark.parametrize(
    ("costs", "live", "patches"),
    [
        ({"a": 0, "b": -1}, {"a": None, "b": None}, {"b": -1}),  # absent means 0: nothing to write
        ({"a": 0, "b": -1}, {"a": "-1", "b": "-1"}, {"a": 0}),  # released from an earlier round
        ({"a": -2}, {"a": "-2"}, {}),  # already there: no write
        ({"a": 0}, {"a": "cheap"}, {"a": 0}),  # garbage is overwritten
        ({"a": -1}, {}, {"a": -1}),
    ],
)
def test_only_changed_annotations_are_patched(
    costs: dict[str, int], live: dict[str, str | None], patches: dict[str, int]
) -> None:
    assert cost_patches(costs, live) == patches


pods_strategy = st.lists(
    st.builds(
        PodLoad,
        name=st.text("abcdef", min_size=1, max_size=4),
        ready=st.booleans(),
        load=st.none() | st.floats(0, 1000),
        terminating=st.booleans(),
    ),
    unique_by=lambda p: p.name,
    max_size=12,
)


@given(pods=pods_strategy, count=st.integers(0, 14))
def test_the_chosen_are_never_busier_than_a_kept_ready_pod(pods: list[PodLoad], count: int) -> None:
    chosen = choose_pods_to_remove(pods, count)
    candidates = [p for p in pods if not p.terminating]
    assert len(chosen) == min(count, len(candidates)) and len(set(chosen)) == len(chosen)
    kept = [p for p in candidates if p.name not in chosen]
    for name in chosen:
        pod = next(p for p in pods if p.name == name)
        for other in kept:
            if not other.ready:
                assert not pod.ready  # a not-ready pod is never kept while a ready one goes
            elif pod.ready and pod.load is not None and other.load is not None:
                assert pod.load <= other.load
    costs = deletion_costs(pods, count)
    assert all(costs[n] < KEEP_COST for n in chosen)
    assert all(costs[p.name] == KEEP_COST for p in kept)
