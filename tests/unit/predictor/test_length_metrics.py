"""Accuracy figures: Kendall's tau-b against hand-computed values, SSJF buckets at their cuts, MAE."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sloguard.predictor.metrics import (
    bucket5_accuracy,
    kendall_tau_b,
    mean_absolute_error,
    ssjf_bucket,
)


def tau_b_by_definition(x: np.ndarray, y: np.ndarray) -> float:
    conc = disc = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        conc += sx * sy > 0
        disc += sx * sy < 0
        tx += sx == 0
        ty += sy == 0
    n0 = len(x) * (len(x) - 1) / 2
    denominator = math.sqrt((n0 - tx) * (n0 - ty))
    return 0.0 if denominator == 0 else float(conc - disc) / denominator


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        ([1, 2, 3, 4], [10, 20, 30, 40], 1.0),
        ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
        ([1, 2, 3], [5, 5, 5], 0.0),
        ([1, 2, 2, 3], [1, 3, 2, 4], 5 / math.sqrt(5 * 6)),
    ],
)
def test_tau_b_known_values(x: list[int], y: list[int], expected: float) -> None:
    assert kendall_tau_b(np.array(x, float), np.array(y, float)) == pytest.approx(expected)


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=2, max_size=25))
def test_tau_b_matches_its_definition(pairs: list[tuple[int, int]]) -> None:
    x = np.array([p[0] for p in pairs], float)
    y = np.array([p[1] for p in pairs], float)
    assert kendall_tau_b(x, y) == pytest.approx(tau_b_by_definition(x, y))


def test_ssjf_buckets_cut_at_42_141_294_503() -> None:
    tokens = np.array([0, 41, 42, 140, 141, 293, 294, 502, 503, 10_000], float)
    assert ssjf_bucket(tokens).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert bucket5_accuracy(np.array([10.0, 100.0]), np.array([41.0, 300.0])) == 0.5


def test_mae() -> None:
    assert mean_absolute_error(np.array([1.0, 5.0]), np.array([2.0, 2.0])) == 2.0
