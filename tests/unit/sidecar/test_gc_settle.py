"""sidecar/gc_settle.py: start-up objects frozen out of collections, young collections rarer, cycles still
collected."""

import gc
import weakref
from collections.abc import Iterator

import pytest

from sloguard.sidecar.gc_settle import GEN0_THRESHOLD, settle


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class _Node:
    def __init__(self) -> None:
        self.other: object = None


@pytest.mark.usefixtures("restore_gc")
def test_settle_freezes_what_is_alive_and_raises_the_young_threshold() -> None:
    alive = [object() for _ in range(100)]
    settle()
    assert gc.get_freeze_count() >= len(alive)
    assert gc.get_threshold()[0] == GEN0_THRESHOLD


@pytest.mark.usefixtures("restore_gc")
def test_cycles_made_after_settle_are_still_collected() -> None:
    settle(gen0_threshold=50)
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    del a, b
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("bad", [0, -1])
def test_a_threshold_below_one_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="gen0_threshold"):
        settle(gen0_threshold=bad)
