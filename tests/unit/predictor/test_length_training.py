"""Training on the real data: the shipped artifact beats the baselines on held-out rows, training is
reproducible, and `sloguard predictor eval --json` writes the agreed figures."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from sloguard.cli import main
from sloguard.predictor.model import ProxyLengthPredictor, load_default_predictor, load_weights
from sloguard.predictor.training.dataset import LengthRow, Split, load_rows, qwen_token_counter, split_of
from sloguard.predictor.training.evaluation import evaluate, evaluate_by_class
from sloguard.predictor.training.proxy import TrainConfig, train
from sloguard.predictor.training.trees import TreeConfig


@pytest.fixture(scope="module")
def rows(shared_data_dir: Path) -> list[LengthRow]:
    return load_rows(shared_data_dir, qwen_token_counter())


def by_split(rows: list[LengthRow], split: Split) -> list[LengthRow]:
    return [r for r in rows if r.split is split]


def test_split_is_by_group_and_deterministic(rows: list[LengthRow]) -> None:
    assert len(rows) == 9385 + 3220
    groups: dict[str, set[Split]] = {}
    for row in rows:
        groups.setdefault(row.group, set()).add(row.split)
    assert all(len(s) == 1 for s in groups.values())
    shares = {s: len(by_split(rows, s)) / len(rows) for s in Split}
    assert shares[Split.TEST] == pytest.approx(0.2, abs=0.02)
    assert split_of("sharegpt:QWJhYvA_0") is split_of("sharegpt:QWJhYvA_0")


def test_shipped_artifact_beats_the_baselines_on_a_held_out_slice(rows: list[LengthRow]) -> None:
    test = by_split(rows, Split.TEST)[::4]
    report = evaluate(load_default_predictor(), by_split(rows, Split.TRAIN), test)
    model = report["model"]
    for name, baseline in report["baselines"].items():
        assert model["mae"] < baseline["mae"], name
        assert model["kendall_tau"] > baseline["kendall_tau"] + 0.1, name
        assert model["bucket5_accuracy"] > baseline["bucket5_accuracy"], name


def test_same_seed_gives_the_same_weights(rows: list[LengthRow]) -> None:
    small_train, small_valid = by_split(rows, Split.TRAIN)[:300], by_split(rows, Split.VALIDATION)[:80]
    trees = TreeConfig(vector_dim=8, max_trees=20, min_data_in_leaf=10)
    config = TrainConfig(seed=7, hash_bits=10, embedding_dim=8, hidden=8, epochs=2, trees=trees)
    first, second = train(small_train, small_valid, config), train(small_train, small_valid, config)
    other = train(small_train, small_valid, dataclasses.replace(config, seed=8))
    a, b, c = first.to_arrays(), second.to_arrays(), other.to_arrays()
    assert "tree_value" in a and "wv_vectors" in a
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["w1"], c["w1"])
    assert not np.array_equal(a["tree_value"], c["tree_value"])  # bagging follows the seed


def test_training_rejects_empty_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        train([], [], TrainConfig())


def test_eval_command_writes_the_agreed_json(
    tmp_path: Path, shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLOGUARD_DATA_DIR", str(shared_data_dir))
    out = tmp_path / "eval.json"
    assert main(["predictor", "eval", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    keys = {
        "mae",
        "kendall_tau",
        "bucket5_accuracy",
        "median_mae",
        "median_bucket5_accuracy",
        "p50_ms",
        "p99_ms",
    }
    assert set(report) == {"model", "baselines", "ceiling", "test_rows"}
    ceiling = report["ceiling"]
    assert ceiling["rows"] == 4 * 157  # AlpacaEval's test instructions, four answers each
    assert ceiling["kendall_tau"] > ceiling["model_kendall_tau"]
    assert set(report["model"]) == keys
    assert set(report["baselines"]) == {"global_mean", "class_mean", "prompt_linear"}
    assert all(set(v) == keys for v in report["baselines"].values())
    assert report["test_rows"] == 2450
    assert all(isinstance(v, float) for v in report["model"].values())


@pytest.mark.parametrize("trees", [True, False])
def test_train_command_writes_a_loadable_artifact(tmp_path: Path, shared_data_dir: Path, trees: bool) -> None:
    out = tmp_path / "model.npz"
    args = ["predictor", "train", "--data-dir", str(shared_data_dir), "--out", str(out), "--max-rows", "200"]
    assert main(args + ([] if trees else ["--no-trees"])) == 0
    weights = load_weights(out.read_bytes())
    assert (weights.trees is not None) is trees
    predictor = ProxyLengthPredictor(weights)
    prediction = predictor.predict(prompt_text="Say hi.", prompt_tokens=3, slo_class="x", max_tokens=50)
    assert 0 <= prediction.quantile(0.5) <= prediction.quantile(0.99) <= 50


@pytest.mark.parametrize("action", ["train", "eval"])
def test_commands_fail_clearly_without_data(
    action: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predictor", action, "--data-dir", str(tmp_path / "missing")]) == 2
    assert "training data missing" in capsys.readouterr().err


def test_per_class_reports_split_the_test_rows_by_data_set(rows: list[LengthRow]) -> None:
    test = by_split(rows, Split.TEST)[::10]
    reports = evaluate_by_class(load_default_predictor(), by_split(rows, Split.TRAIN), test)
    assert set(reports) == {"alpaca_eval", "sharegpt"}
    assert sum(r["test_rows"] for r in reports.values()) == len(test)
    assert all(
        set(r["baselines"]) == {"global_mean", "class_mean", "prompt_linear"} for r in reports.values()
    )
