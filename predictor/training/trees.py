"""Offline fitting of the trees stacked on the proxy model's blend: word vectors, lightgbm, export, stack.

Called by `sloguard.predictor.training.proxy.train` (unless `--no-trees`) after the MLP/neighbour blend is
fitted; needs the `train` extra (lightgbm, scipy). Steps:
1. Static word vectors (`build_word_vectors`): latent semantic analysis of the training prompts. The
   TF-IDF matrix of their words (the `max_words` most frequent words with document frequency at least
   `min_df`) is factorised by a seeded randomised SVD; each word's vector is its row of the top
   `vector_dim` right singular vectors, stored as float16 (the trees are fitted on the rounded values).
2. Boosted regression trees (lightgbm, squared error on log1p(output tokens)) over `tree_inputs`, on the
   training rows plus a copy of them with the class hidden (so an unknown class gets a class-free answer),
   with early stopping on the validation rows and a cap on trees and depth that keeps a prediction cheap.
   Determinism: `deterministic=True`, `num_threads=1`, fixed seeds, `force_row_wise=True`.
3. The trees are exported to numpy (`training.tree_export`) and the stack z_hat = e*z_blend + f*z_tree + g is
   fitted by least squares on the validation rows with the exported trees' answers, the ones served.
4. Residual quantiles and the smearing factor are recomputed from the stacked validation residuals.
"""

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from sloguard.predictor.features import prompt_features
from sloguard.predictor.model import ProxyWeights
from sloguard.predictor.training.dataset import LengthRow
from sloguard.predictor.training.tree_export import ensemble_from_dump
from sloguard.predictor.trees import TreeEnsemble, tree_inputs
from sloguard.predictor.vectors import WordVectors, prompt_words

Float64Array = npt.NDArray[np.float64]
SVD_OVERSAMPLE = 10
SVD_POWER_ITERATIONS = 4


@dataclasses.dataclass(frozen=True)
class TreeConfig:
    seed: int = 0
    vector_dim: int = 32
    max_words: int = 8000
    min_df: int = 3
    learning_rate: float = 0.05
    max_trees: int = 800
    num_leaves: int = 15
    max_depth: int = 5
    min_data_in_leaf: int = 40
    feature_fraction: float = 0.7
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    early_stopping_rounds: int = 100


def _sparse() -> Any:
    try:
        import scipy.sparse  # type: ignore[import-untyped]  # noqa: PLC0415
    except ImportError as exc:
        raise RuntimeError("training the trees needs scipy: pip install 'sloguard[train]'") from exc
    return scipy.sparse


def build_word_vectors(texts: Sequence[str], config: TreeConfig) -> WordVectors:
    """LSA word vectors of `texts` (see the module docstring), deterministic for a seed and text order."""
    sparse = _sparse()
    words_of = [prompt_words(t) for t in texts]
    df: Counter[str] = Counter()
    for words in words_of:
        df.update(set(words))
    ranked = sorted((w for w, c in df.items() if c >= config.min_df), key=lambda w: (-df[w], w))
    vocab = tuple(sorted(ranked[: config.max_words]))
    dim = min(config.vector_dim, max(1, len(vocab) - 1), max(1, len(texts) - 1))
    if len(vocab) < 2:
        raise ValueError("too few words to build word vectors")
    index = {w: i for i, w in enumerate(vocab)}
    idf = np.array([math.log(len(texts) / df[w]) for w in vocab], dtype=np.float64)
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for r, words in enumerate(words_of):
        counts = Counter(index[w] for w in words if w in index)
        weights = {j: (1.0 + math.log(c)) * idf[j] for j, c in sorted(counts.items())}
        norm = math.sqrt(sum(v * v for v in weights.values())) or 1.0
        for j, v in weights.items():
            rows.append(r)
            cols.append(j)
            vals.append(v / norm)
    x = sparse.csr_matrix((vals, (rows, cols)), shape=(len(texts), len(vocab)), dtype=np.float64)
    rng = np.random.default_rng(config.seed)
    y = x @ rng.standard_normal((len(vocab), dim + SVD_OVERSAMPLE))
    q = np.linalg.qr(y)[0]
    for _ in range(SVD_POWER_ITERATIONS):
        q = np.linalg.qr(x @ np.linalg.qr(x.T @ q)[0])[0]
    b = np.asarray(x.T @ q).T  # (dim + oversample, vocab)
    vt = np.linalg.svd(b, full_matrices=False)[2][:dim]
    signs = np.sign(vt[np.arange(dim), np.argmax(np.abs(vt), axis=1)])  # a fixed sign per component
    vectors = (vt * signs[:, None]).T.astype(np.float16).astype(np.float32)  # as shipped
    return WordVectors(words=vocab, idf=idf.astype(np.float32), vectors=vectors)


def _inputs(
    rows: Sequence[LengthRow], classes: tuple[str, ...], vectors: WordVectors, *, hide_class: bool
) -> Float64Array:
    return np.stack(
        [
            tree_inputs(
                dense=prompt_features(r.prompt_text, r.prompt_tokens, hash_bits=8).dense,
                prompt_text=r.prompt_text,
                class_id=-1 if hide_class or r.slo_class not in classes else classes.index(r.slo_class),
                classes=len(classes),
                vectors=vectors,
            )
            for r in rows
        ]
    )


def lightgbm_params(config: TreeConfig) -> dict[str, Any]:
    return {
        "objective": "regression",
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "max_depth": config.max_depth,
        "min_data_in_leaf": config.min_data_in_leaf,
        "feature_fraction": config.feature_fraction,
        "bagging_fraction": config.bagging_fraction,
        "bagging_freq": 1,
        "lambda_l2": config.lambda_l2,
        "seed": config.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,
        "verbose": -1,
    }


def fit_trees(
    x_train: Float64Array,
    y_train: Float64Array,
    x_valid: Float64Array,
    y_valid: Float64Array,
    config: TreeConfig,
) -> tuple[Any, TreeEnsemble]:
    """The lightgbm booster (early-stopped on the validation rows) and its numpy export."""
    try:
        import lightgbm  # noqa: PLC0415
    except ImportError as exc:
        raise RuntimeError("training the trees needs lightgbm: pip install 'sloguard[train]'") from exc
    train_set = lightgbm.Dataset(x_train, y_train, free_raw_data=True)
    valid_set = lightgbm.Dataset(x_valid, y_valid, reference=train_set)
    booster = lightgbm.train(
        lightgbm_params(config),
        train_set,
        num_boost_round=config.max_trees,
        valid_sets=[valid_set],
        callbacks=[lightgbm.early_stopping(config.early_stopping_rounds, verbose=False)],
    )
    return booster, ensemble_from_dump(booster.dump_model(num_iteration=booster.best_iteration))


def add_trees(
    weights: ProxyWeights,
    train_rows: Sequence[LengthRow],
    validation_rows: Sequence[LengthRow],
    config: TreeConfig,
    quantile_levels: tuple[float, ...],
) -> ProxyWeights:
    """`weights` (the blend) with trees stacked on top, and quantiles/smearing of the stacked residuals."""
    vectors = build_word_vectors([r.prompt_text for r in train_rows], config)
    classes = weights.classes
    x_train = np.concatenate(
        (
            _inputs(train_rows, classes, vectors, hide_class=False),
            _inputs(train_rows, classes, vectors, hide_class=True),
        )
    )
    z_train = np.log1p(np.array([r.output_tokens for r in train_rows], dtype=np.float64))
    x_valid = _inputs(validation_rows, classes, vectors, hide_class=False)
    z_valid = np.log1p(np.array([r.output_tokens for r in validation_rows], dtype=np.float64))
    _, trees = fit_trees(x_train, np.concatenate((z_train, z_train)), x_valid, z_valid, config)
    z_tree = trees.predict_many(x_valid)
    z_blend = np.array(
        [weights.predict_log(r.prompt_text, r.prompt_tokens, r.slo_class) for r in validation_rows]
    )
    design = np.stack((z_blend, z_tree, np.ones_like(z_tree)), axis=1)
    coef = np.linalg.lstsq(design, z_valid, rcond=None)[0]
    residuals = z_valid - design @ coef
    e, f, g = (float(c) for c in coef)
    return dataclasses.replace(
        weights,
        trees=trees,
        vectors=vectors,
        stack=(e, f, g),
        residual_quantiles=np.quantile(residuals, quantile_levels).astype(np.float32),
        smearing=float(np.mean(np.exp(residuals))),
    )
