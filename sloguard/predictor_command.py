"""`sloguard predictor train|eval`: fit the output-length proxy model and score it against the baselines.

`train` reads shared/data, fits on the deterministic training split (see
`sloguard.predictor.training.dataset`) and writes the weights to the package data file the sidecar loads
(`predictor/model.npz`), or to `--out`. `eval` scores an artifact (the shipped one by default) and the
three baselines on the held-out split and writes {"model": {...}, "baselines": {...}, "test_rows": n} to
`--json` (pooled over both data sets); `--by-class` also prints the same figures for each data set's test
rows to stderr.
"""

# Imports of numpy and the predictor modules stay inside the handlers so that `sloguard --help` stays fast.
# ruff: noqa: PLC0415

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sloguard.predictor.training.dataset import LengthRow, Split


def default_data_dir() -> Path:
    """$SLOGUARD_DATA_DIR, else the shared/data folder beside the repository checkout."""
    if env := os.environ.get("SLOGUARD_DATA_DIR"):
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def default_artifact() -> Path:
    from sloguard import predictor
    from sloguard.predictor.model import ARTIFACT_NAME

    return Path(predictor.__file__).resolve().parent / ARTIFACT_NAME


def _split_rows(data_dir: Path, max_rows: int | None) -> "dict[Split, list[LengthRow]] | None":
    """Rows by split, or None (after printing why) when the data or the tokenizer is missing."""
    from sloguard.predictor.training.dataset import Split, load_rows, qwen_token_counter

    try:
        rows = load_rows(data_dir, qwen_token_counter())
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc} (set --data-dir or SLOGUARD_DATA_DIR)", file=sys.stderr)
        return None
    by_split = {s: [r for r in rows if r.split is s] for s in Split}
    if max_rows is not None:
        by_split[Split.TRAIN] = by_split[Split.TRAIN][:max_rows]
    return by_split


def run_train(args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np

    from sloguard.predictor.training.dataset import Split
    from sloguard.predictor.training.proxy import TrainConfig, train

    started = time.perf_counter()
    by_split = _split_rows(Path(args.data_dir), args.max_rows)
    if by_split is None:
        return 2
    config = TrainConfig(seed=args.seed)
    if args.no_trees:
        config = dataclasses.replace(config, trees=None)
    try:
        weights = train(by_split[Split.TRAIN], by_split[Split.VALIDATION], config)
    except RuntimeError as exc:  # a missing training dependency (the `train` extra)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as handle:
        np.savez_compressed(handle, **weights.to_arrays())  # type: ignore[arg-type]
    print(
        f"trained on {len(by_split[Split.TRAIN])} rows (validation {len(by_split[Split.VALIDATION])}) "
        f"in {time.perf_counter() - started:.1f} s; wrote {out} ({out.stat().st_size / 1e6:.2f} MB)"
    )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from sloguard.predictor.model import ProxyLengthPredictor, load_weights
    from sloguard.predictor.training.dataset import Split
    from sloguard.predictor.training.evaluation import evaluate, evaluate_by_class

    by_split = _split_rows(Path(args.data_dir), None)
    if by_split is None:
        return 2
    artifact = Path(args.artifact)
    if not artifact.is_file():
        print(f"error: no model artifact at {artifact}; run `sloguard predictor train`", file=sys.stderr)
        return 2
    model = ProxyLengthPredictor(load_weights(artifact.read_bytes()))
    report = evaluate(model, by_split[Split.TRAIN] + by_split[Split.VALIDATION], by_split[Split.TEST])
    text = json.dumps(report, indent=2, sort_keys=True) + "\n"
    if args.json:
        Path(args.json).write_text(text)
    print(text, end="")
    if args.by_class:
        fit_rows = by_split[Split.TRAIN] + by_split[Split.VALIDATION]
        for name, part in evaluate_by_class(model, fit_rows, by_split[Split.TEST]).items():
            figures = {"model": part["model"]} | part["baselines"]
            for who, scores in figures.items():
                line = " ".join(f"{k} {v}" for k, v in scores.items())
                print(f"{name} ({part['test_rows']} rows) {who}: {line}", file=sys.stderr)
    return 0


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser("predictor", help="train or evaluate the output-length predictor")
    actions = parser.add_subparsers(dest="predictor_command", metavar="ACTION", required=True)
    train_parser = actions.add_parser(
        "train", help="fit the proxy model on shared/data and write its weights"
    )
    train_parser.add_argument("--data-dir", default=str(default_data_dir()), help="the shared/data folder")
    train_parser.add_argument("--out", default=str(default_artifact()), help="where the .npz weights go")
    train_parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same weights)")
    train_parser.add_argument("--max-rows", type=int, default=None, help="train on the first N training rows")
    train_parser.add_argument(
        "--no-trees", action="store_true", help="train the MLP/neighbour blend alone, without stacked trees"
    )
    train_parser.set_defaults(func=run_train)
    eval_parser = actions.add_parser("eval", help="score the model and the baselines on the held-out split")
    eval_parser.add_argument("--data-dir", default=str(default_data_dir()), help="the shared/data folder")
    eval_parser.add_argument("--artifact", default=str(default_artifact()), help="the .npz weights to score")
    eval_parser.add_argument("--json", metavar="FILE", help="write the figures here as JSON")
    eval_parser.add_argument(
        "--by-class", action="store_true", help="also print the figures per data set (class) to stderr"
    )
    eval_parser.set_defaults(func=run_eval)
