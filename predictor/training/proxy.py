"""Offline training of the output-length proxy model (numpy only, fixed seeds, bounded time).

Called by `sloguard predictor train` and the reproducibility test; produces the `ProxyWeights` that
`sloguard.predictor.model` serves. The model is a fastText-style embedding bag over hashed prompt
n-grams, concatenated with standardised dense features and the training class, through one ReLU layer to
z = log1p(output tokens), fitted by mini-batch Adam on the squared error in log space (lazy Adam on the
embedding rows a batch touches), with early stopping on the validation split. For a share of the rows the
class is dropped (zero one-hot) and for another share the text is dropped (token count only), so the model
also answers well for unknown classes and text-less requests. Then the TF-IDF neighbour index
(`neighbours`) is built over the training prompts, and the four blend coefficients of MLP and
neighbours (see `model`) are fitted by least squares on the validation split, the same rows that
stop the MLP early; quantiles and the smearing factor come from the blended validation residuals.
The MLP is an ensemble of `members` nets (member j trained with seed + j), averaged in log space.
Measured on the validation split (1,226 rows): one MLP tau 0.350, bucket accuracy 0.383, MAE 154; one MLP
+ neighbours 0.377, 0.375, 146; two MLPs + neighbours (the default) 0.384, 0.387, 144.

Determinism: a single `numpy.random.Generator(seed)` drives initialisation, shuffling and the dropouts,
and every array op is float32 numpy on one thread's worth of data, so the same seed and rows give the same
weights (the reproducibility test checks this bit for bit).
"""

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from sloguard.predictor.features import DENSE_FEATURES, prompt_features
from sloguard.predictor.model import BLEND_TERMS, ProxyWeights
from sloguard.predictor.neighbours import NeighbourIndex
from sloguard.predictor.training.dataset import TRAINING_CLASSES, LengthRow
from sloguard.predictor.training.trees import TreeConfig, add_trees

QUANTILE_LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    hash_bits: int = 16
    embedding_dim: int = 32
    hidden: int = 64
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-5
    class_dropout: float = 0.3
    text_dropout: float = 0.25
    patience: int = 4
    members: int = 2  # MLPs averaged, member j trained with seed + j
    neighbour_hash_bits: int = 20
    neighbours_k: int = 80
    neighbours_power: float = 4.0
    neighbours_max_df: float = 0.1
    neighbours_min_similarity: float = 0.05
    trees: TreeConfig | None = field(default_factory=TreeConfig)  # None: the blend alone (--no-trees)


@dataclass(frozen=True)
class _Encoded:
    """Rows as arrays: CSR sparse indices (with and without text), dense features, class ids, targets."""

    indptr: IntArray
    indices: IntArray
    notext_indices: IntArray  # one index per row
    dense: FloatArray
    notext_dense: FloatArray
    class_ids: IntArray  # -1 for a class outside TRAINING_CLASSES
    target: FloatArray


def _encode(rows: Sequence[LengthRow], hash_bits: int) -> _Encoded:
    indptr = [0]
    indices: list[int] = []
    notext: list[int] = []
    dense: list[tuple[float, ...]] = []
    notext_dense: list[tuple[float, ...]] = []
    for row in rows:
        with_text = prompt_features(row.prompt_text, row.prompt_tokens, hash_bits=hash_bits)
        without = prompt_features(None, row.prompt_tokens, hash_bits=hash_bits)
        indices += with_text.indices
        indptr.append(len(indices))
        notext.append(without.indices[0])
        dense.append(with_text.dense)
        notext_dense.append(without.dense)
    return _Encoded(
        indptr=np.array(indptr, dtype=np.int64),
        indices=np.array(indices, dtype=np.int64),
        notext_indices=np.array(notext, dtype=np.int64),
        dense=np.array(dense, dtype=np.float32).reshape(-1, DENSE_FEATURES),
        notext_dense=np.array(notext_dense, dtype=np.float32).reshape(-1, DENSE_FEATURES),
        class_ids=np.array(
            [TRAINING_CLASSES.index(r.slo_class) if r.slo_class in TRAINING_CLASSES else -1 for r in rows],
            dtype=np.int64,
        ),
        target=np.log1p(np.array([r.output_tokens for r in rows], dtype=np.float32)),
    )


class _Adam:
    def __init__(self, shape: tuple[int, ...], lr: float) -> None:
        self.m = np.zeros(shape, dtype=np.float32)
        self.v = np.zeros(shape, dtype=np.float32)
        self.lr = lr
        self.step = 0

    def update(self, param: FloatArray, grad: FloatArray, rows: IntArray | None = None) -> None:
        """Dense update, or lazy update of `rows` only (then `grad` holds just those rows)."""
        self.step += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        scale = self.lr * math.sqrt(1 - b2**self.step) / (1 - b1**self.step)
        if rows is None:
            self.m = b1 * self.m + (1 - b1) * grad
            self.v = b2 * self.v + (1 - b2) * grad * grad
            param -= (scale * self.m / (np.sqrt(self.v) + eps)).astype(np.float32)
            return
        m = b1 * self.m[rows] + (1 - b1) * grad
        v = b2 * self.v[rows] + (1 - b2) * grad * grad
        self.m[rows], self.v[rows] = m, v
        param[rows] -= (scale * m / (np.sqrt(v) + eps)).astype(np.float32)


@dataclass
class _Params:
    embeddings: FloatArray
    w1: FloatArray
    b1: FloatArray
    w2: FloatArray
    b2: FloatArray  # shape (1,)

    def copy(self) -> "_Params":
        return _Params(*(a.copy() for a in (self.embeddings, self.w1, self.b1, self.w2, self.b2)))


def _batch_inputs(
    data: _Encoded,
    *,
    batch: IntArray,
    mean: FloatArray,
    std: FloatArray,
    drop_text: npt.NDArray[np.bool_],
    drop_class: npt.NDArray[np.bool_],
) -> tuple[IntArray, IntArray, FloatArray, FloatArray]:
    """Flat sparse indices, their row ids within the batch, and the dense+class block."""
    flat: list[IntArray] = []
    owners: list[IntArray] = []
    for pos, row in enumerate(batch):
        if drop_text[pos]:
            idx = data.notext_indices[row : row + 1]
        else:
            idx = data.indices[data.indptr[row] : data.indptr[row + 1]]
        flat.append(idx)
        owners.append(np.full(idx.shape[0], pos, dtype=np.int64))
    dense = np.where(drop_text[:, None], data.notext_dense[batch], data.dense[batch])
    onehot = np.zeros((batch.shape[0], len(TRAINING_CLASSES)), dtype=np.float32)
    cls = data.class_ids[batch]
    keep = (cls >= 0) & ~drop_class
    onehot[np.nonzero(keep)[0], cls[keep]] = 1.0
    block = np.concatenate(((dense - mean) / std, onehot), axis=1).astype(np.float32)
    counts = np.bincount(np.concatenate(owners), minlength=batch.shape[0]).astype(np.float32)
    return np.concatenate(flat), np.concatenate(owners), block, counts


def _forward(
    params: _Params, flat: IntArray, owners: IntArray, block: FloatArray, counts: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    bag = np.zeros((block.shape[0], params.embeddings.shape[1]), dtype=np.float32)
    np.add.at(bag, owners, params.embeddings[flat])
    bag /= counts[:, None]
    x = np.concatenate((bag, block), axis=1)
    hidden = np.maximum(x @ params.w1 + params.b1, 0.0)
    return x, hidden, hidden @ params.w2 + params.b2[0]


def _predict_all(
    params: _Params, data: _Encoded, mean: FloatArray, std: FloatArray, *, with_class: bool = True
) -> FloatArray:
    n = data.target.shape[0]
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, 512):
        batch = np.arange(start, min(n, start + 512), dtype=np.int64)
        no = np.zeros(batch.shape[0], dtype=bool)
        flat, owners, block, counts = _batch_inputs(
            data, batch=batch, mean=mean, std=std, drop_text=no, drop_class=no | (not with_class)
        )
        out[batch] = _forward(params, flat, owners, block, counts)[2]
    return out


def _train_member(
    data: _Encoded,
    valid: _Encoded,
    *,
    mean: FloatArray,
    std: FloatArray,
    config: TrainConfig,
    rng: np.random.Generator,
) -> _Params:
    """One MLP of the ensemble: Adam with early stopping on the validation loss; the best epoch's weights."""
    k, hidden = config.embedding_dim, config.hidden
    width = k + DENSE_FEATURES + len(TRAINING_CLASSES)
    params = _Params(
        embeddings=(rng.standard_normal((1 << config.hash_bits, k)) * 0.1).astype(np.float32),
        w1=(rng.standard_normal((width, hidden)) * math.sqrt(2.0 / width)).astype(np.float32),
        b1=np.zeros(hidden, dtype=np.float32),
        w2=(rng.standard_normal(hidden) * math.sqrt(1.0 / hidden)).astype(np.float32),
        b2=np.array([float(data.target.mean())], dtype=np.float32),
    )
    opt = {
        name: _Adam(getattr(params, name).shape, config.learning_rate)
        for name in ("embeddings", "w1", "b1", "w2", "b2")
    }
    best, best_loss, stale = params.copy(), math.inf, 0
    n = data.target.shape[0]
    for _epoch in range(config.epochs):
        order = rng.permutation(n)
        for start in range(0, n, config.batch_size):
            batch = order[start : start + config.batch_size]
            drop_text = np.less(rng.random(batch.shape[0]), config.text_dropout)
            drop_class = np.less(rng.random(batch.shape[0]), config.class_dropout)
            flat, owners, block, counts = _batch_inputs(
                data, batch=batch, mean=mean, std=std, drop_text=drop_text, drop_class=drop_class
            )
            x, h, out = _forward(params, flat, owners, block, counts)
            d_out = (2.0 / batch.shape[0]) * (out - data.target[batch])
            g_w2 = h.T @ d_out + config.weight_decay * params.w2
            d_h = np.outer(d_out, params.w2) * (h > 0)
            g_w1 = x.T @ d_h + config.weight_decay * params.w1
            d_bag = (d_h @ params.w1.T)[:, :k] / counts[:, None]
            rows, inverse = np.unique(flat, return_inverse=True)
            g_emb = np.zeros((rows.shape[0], k), dtype=np.float32)
            np.add.at(g_emb, inverse, d_bag[owners])
            g_emb += config.weight_decay * params.embeddings[rows]
            opt["embeddings"].update(params.embeddings, g_emb, rows)
            opt["w1"].update(params.w1, g_w1.astype(np.float32))
            opt["b1"].update(params.b1, d_h.sum(axis=0).astype(np.float32))
            opt["w2"].update(params.w2, g_w2.astype(np.float32))
            opt["b2"].update(params.b2, np.array([d_out.sum()], dtype=np.float32))
        loss = float(np.mean((_predict_all(params, valid, mean, std) - valid.target) ** 2))
        if loss < best_loss - 1e-4:
            best, best_loss, stale = params.copy(), loss, 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    return best


def train(
    train_rows: Sequence[LengthRow], validation_rows: Sequence[LengthRow], config: TrainConfig
) -> ProxyWeights:
    """Fit the proxy model; deterministic for a given config and row order."""
    if not train_rows or not validation_rows:
        raise ValueError("training needs at least one training row and one validation row")
    data = _encode(train_rows, config.hash_bits)
    valid = _encode(validation_rows, config.hash_bits)
    mean = data.dense.mean(axis=0)
    std = np.maximum(data.dense.std(axis=0), 1e-3).astype(np.float32)
    members = [
        _train_member(
            data, valid, mean=mean, std=std, config=config, rng=np.random.default_rng(config.seed + member)
        )
        for member in range(config.members)
    ]
    for best in members:
        best.embeddings = best.embeddings.astype(np.float16).astype(np.float32)  # as shipped
    index = _build_neighbours(train_rows, config)
    z_mlp = np.mean([_predict_all(best, valid, mean, std) for best in members], axis=0).astype(np.float64)
    blend, z_hat = _fit_blend(index, validation_rows, z_mlp, valid.target.astype(np.float64), config)
    residuals = valid.target - z_hat.astype(np.float32)
    weights = ProxyWeights(
        hash_bits=config.hash_bits,
        classes=TRAINING_CLASSES,
        embeddings=np.stack([m.embeddings for m in members]),
        dense_mean=mean.astype(np.float32),
        dense_std=std,
        w1=np.stack([m.w1 for m in members]),
        b1=np.stack([m.b1 for m in members]),
        w2=np.stack([m.w2 for m in members]),
        b2=np.concatenate([m.b2 for m in members]),
        quantile_levels=QUANTILE_LEVELS,
        residual_quantiles=np.quantile(residuals, QUANTILE_LEVELS).astype(np.float32),
        smearing=float(np.mean(np.exp(residuals.astype(np.float64)))),
        neighbours=index,
        neighbour_hash_bits=config.neighbour_hash_bits,
        blend=blend,
    )
    if config.trees is None:
        return weights
    tree_config = dataclasses.replace(config.trees, seed=config.seed)
    return add_trees(weights, train_rows, validation_rows, tree_config, QUANTILE_LEVELS)


def _class_id(slo_class: str) -> int:
    return TRAINING_CLASSES.index(slo_class) if slo_class in TRAINING_CLASSES else -1


def _build_neighbours(rows: Sequence[LengthRow], config: TrainConfig) -> NeighbourIndex:
    bits = config.neighbour_hash_bits
    return NeighbourIndex.build(
        [prompt_features(r.prompt_text, r.prompt_tokens, hash_bits=bits).indices for r in rows],
        [math.log1p(r.output_tokens) for r in rows],
        [_class_id(r.slo_class) for r in rows],
        k=config.neighbours_k,
        power=config.neighbours_power,
        min_similarity=config.neighbours_min_similarity,
        max_df=config.neighbours_max_df,
    )


def _fit_blend(
    index: NeighbourIndex,
    rows: Sequence[LengthRow],
    z_mlp: npt.NDArray[np.float64],
    target: npt.NDArray[np.float64],
    config: TrainConfig,
) -> tuple[tuple[float, float, float, float], npt.NDArray[np.float64]]:
    """Least-squares blend of the MLP and the neighbours on the validation rows, and the blended z there.

    Rows the index has nothing for keep the MLP's answer (as at serving time); with fewer matched rows
    than coefficients the blend stays the MLP alone."""
    design: list[tuple[float, float, float, float]] = []
    matched: list[int] = []
    for i, row in enumerate(rows):
        features = prompt_features(row.prompt_text, row.prompt_tokens, hash_bits=config.neighbour_hash_bits)
        answer = index.query(features.indices, _class_id(row.slo_class))
        if answer is not None:
            z_nn, z = answer.log_length, float(z_mlp[i])
            design.append((z, z_nn, 1.0, (z_nn - z) * answer.best_similarity))
            matched.append(i)
    z_hat = z_mlp.copy()
    if len(matched) <= BLEND_TERMS:
        return (1.0, 0.0, 0.0, 0.0), z_hat
    x = np.array(design, dtype=np.float64)
    coef = np.linalg.lstsq(x, target[matched], rcond=None)[0]
    z_hat[matched] = x @ coef
    a, b, c, d = (float(v) for v in coef)
    return (a, b, c, d), z_hat
