"""The numpy export of lightgbm trees answers exactly as lightgbm does, and the shipped trees are the ones
the training produced (same answers as a booster refitted from the same config on a sample)."""

import lightgbm
import numpy as np
import pytest

from sloguard.predictor.model import load_default_predictor
from sloguard.predictor.training.tree_export import ensemble_from_dump
from sloguard.predictor.training.trees import TreeConfig, fit_trees, lightgbm_params


def synthetic(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6))
    x[:, 3] = rng.integers(0, 3, size=rows)  # a feature with ties, so many rows sit on thresholds
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1] * (x[:, 3] == 1) + 0.1 * rng.normal(size=rows)
    return x, y


def test_exported_trees_match_lightgbm_on_a_sample_including_threshold_values() -> None:
    x, y = synthetic(2000, 0)
    xv, yv = synthetic(300, 1)
    config = TreeConfig(max_trees=60, early_stopping_rounds=10, min_data_in_leaf=20)
    booster, trees = fit_trees(x, y, xv, yv, config)
    sample, _ = synthetic(500, 2)
    # values exactly at the split thresholds: lightgbm goes left on <=, the export must too
    on_threshold = np.tile(sample[:1], (50, 1))
    inner = np.isfinite(trees.threshold)
    for i, node in enumerate(np.flatnonzero(inner)[:50]):
        on_threshold[i, trees.feature[node]] = trees.threshold[node]
    sample = np.concatenate((sample, on_threshold))
    expected = booster.predict(sample, num_iteration=booster.best_iteration)
    np.testing.assert_allclose(trees.predict_many(sample), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose([trees.predict(row) for row in sample[:40]], expected[:40], rtol=1e-12)
    assert trees.trees == booster.best_iteration
    assert trees.depth <= config.max_depth


def test_training_the_trees_twice_gives_the_same_arrays() -> None:
    x, y = synthetic(1500, 3)
    xv, yv = synthetic(200, 4)
    config = TreeConfig(max_trees=30, early_stopping_rounds=5)
    first, second = fit_trees(x, y, xv, yv, config)[1], fit_trees(x, y, xv, yv, config)[1]
    a, b = first.to_arrays("t"), second.to_arrays("t")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert lightgbm_params(config)["num_threads"] == 1
    assert lightgbm_params(config)["deterministic"] is True


def test_categorical_splits_are_refused() -> None:
    x, y = synthetic(1000, 5)
    params = {"objective": "regression", "verbose": -1, "num_threads": 1, "min_data_per_group": 5}
    booster = lightgbm.train(
        params,
        lightgbm.Dataset(x, y, categorical_feature=[3]),
        num_boost_round=5,
    )
    with pytest.raises(ValueError, match="numerical"):
        ensemble_from_dump(booster.dump_model())


def test_the_shipped_artifact_stacks_bounded_trees_on_the_blend() -> None:
    weights = load_default_predictor().weights
    assert weights.trees is not None and weights.vectors is not None
    assert weights.trees.depth <= TreeConfig().max_depth
    assert weights.trees.trees <= TreeConfig().max_trees
    e, f, _ = weights.stack
    assert e > 0 and f > 0  # both the blend and the trees carry weight in the stack
    text = "Write a detailed essay about the history of the Roman empire."
    stacked = weights.predict_log(text, 20, "sharegpt")
    assert np.isfinite(stacked)
