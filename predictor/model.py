"""The trained output-length proxy model: a hashed n-gram embedding bag and a small MLP, numpy only.

The default `OutputLengthPredictor` of the sidecar and the simulator (`load_default_predictor()`); trained
offline by `sloguard predictor train` (`sloguard.predictor.training.proxy`), which writes the weights as
package data beside this module (`model.npz`). Reading that file is this module's only I/O.

Prediction, in log space (`z = log1p(output tokens)`):
    z_mlp = mean over an ensemble of MLPs (same inputs, other seeds) of
            MLP([mean of the prompt's hashed n-gram embeddings, standardised dense features, class one-hot])
    z_nn, s = the TF-IDF nearest training prompts' weighted mean log length and best cosine similarity
              (`neighbours`; skipped when the text is unknown or shares no feature with the index)
    z_blend = a*z_mlp + b*z_nn + c + d*(z_nn - z_mlp)*s   (a..d fitted on the validation split)
    z_tree = boosted regression trees (`trees`) over the dense statistics, instruction cues
             (`cues`), static word vectors (`vectors`) and the class
    z_hat = e*z_blend + f*z_tree + g                     (the stack; e..g fitted on the validation split)
          + online bias of the class
An artifact without trees (`sloguard predictor train --no-trees`) serves z_hat = z_blend.
Quantiles are z_hat plus the empirical quantiles of the validation residuals (so they are monotone by
construction); the mean is the smearing estimate exp(z_hat) * E[exp(residual)] - 1. Everything is capped at
`max_tokens`. An SLO class that was not a training class gets a zero one-hot (the model was trained with the
class dropped for part of the rows, so this is its class-free answer).

Online correction (`observe`): each class keeps an exponentially weighted mean of its log residuals (rate
1/(n+1), floored at `MIN_RATE`, so it first averages and then tracks drift); the bias applied is that mean
shrunk towards the same statistic over all classes, `n/(n + SHRINK)`, so a class's first few observations
move it only part of the way. An output cut off at `max_tokens` is a lower bound: it raises the bias but never
lowers it. Not thread-safe: one predictor per event loop.
"""

import functools
import math
from dataclasses import dataclass, field
from importlib import resources
from io import BytesIO
from typing import Any

import numpy as np
import numpy.typing as npt

from sloguard.predictor.cues import CUE_COUNT
from sloguard.predictor.features import DENSE_FEATURES, PromptFeatures, prompt_features
from sloguard.predictor.neighbours import NeighbourIndex
from sloguard.predictor.prediction import LengthPrediction
from sloguard.predictor.trees import TreeEnsemble, tree_inputs
from sloguard.predictor.vectors import WordVectors

ARTIFACT_NAME = "model.npz"
MIN_RATE = 0.02
SHRINK = 10.0
OFFLINE_CACHE_SIZE = 4096
"""`ProxyLengthPredictor` keeps the offline z_hat of this many recent (prompt, class) keys: `observe` at a
request's end recomputes the z_hat `predict` computed at its arrival, and token-id prompts (no text)
repeat their keys. The model is a pure function of the key, so this changes no prediction; measured in
the sidecar in front of a fake vLLM (token-id prompts), the model was about a tenth of its CPU per request."""
BLEND_TERMS = 4
NEIGHBOUR_PREFIX = "nn_"
TREE_PREFIX = "tree_"
VECTOR_PREFIX = "wv_"
STACK_TERMS = 3
FloatArray = npt.NDArray[np.float32]


def check_request(*, prompt_tokens: int, max_tokens: int) -> None:
    """Reject impossible request sizes with a clear error (shared by every predictor here)."""
    for name, value, lowest in (("prompt_tokens", prompt_tokens, 0), ("max_tokens", max_tokens, 1)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite integer, got {value!r}")
        if value < lowest or value != int(value):
            raise ValueError(f"{name} must be an integer >= {lowest}, got {value!r}")


def check_observation(*, prompt_tokens: int, max_tokens: int, output_tokens: int) -> None:
    check_request(prompt_tokens=prompt_tokens, max_tokens=max_tokens)
    value = output_tokens
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"output_tokens must be a finite integer, got {value!r}")
    if value < 0 or value != int(value):
        raise ValueError(f"output_tokens must be an integer >= 0, got {value!r}")


@dataclass(frozen=True)
class ProxyWeights:
    """Everything the proxy model needs; `to_arrays`/`from_arrays` are its on-disk form."""

    hash_bits: int
    classes: tuple[str, ...]
    embeddings: FloatArray  # (members, 2**hash_bits, k): an ensemble of MLPs, averaged
    dense_mean: FloatArray  # (DENSE_FEATURES,)
    dense_std: FloatArray  # (DENSE_FEATURES,)
    w1: FloatArray  # (members, k + DENSE_FEATURES + len(classes), hidden)
    b1: FloatArray  # (members, hidden)
    w2: FloatArray  # (members, hidden)
    b2: FloatArray  # (members,)
    quantile_levels: tuple[float, ...]
    residual_quantiles: FloatArray  # (len(quantile_levels),), log space
    smearing: float  # E[exp(residual)]
    neighbours: NeighbourIndex | None = None  # None: the MLP alone
    neighbour_hash_bits: int = 20
    blend: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)  # see `blended_log`
    trees: TreeEnsemble | None = None  # None: the blend alone
    vectors: WordVectors | None = None  # the trees' word table (present exactly when trees are)
    stack: tuple[float, float, float] = (1.0, 0.0, 0.0)  # z_hat = e*z_blend + f*z_tree + g

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 3 or self.embeddings.shape[1] != 1 << self.hash_bits:
            raise ValueError("embedding tables do not match hash_bits")
        members, k = self.embeddings.shape[0], self.embeddings.shape[2]
        hidden = self.b1.shape[-1]
        if self.w1.shape != (members, k + DENSE_FEATURES + len(self.classes), hidden):
            raise ValueError(f"w1 has shape {self.w1.shape}, inconsistent with the other weights")
        if self.b1.shape != (members, hidden) or self.w2.shape != (members, hidden):
            raise ValueError("b1 and w2 must be (members, hidden)")
        if self.b2.shape != (members,):
            raise ValueError("b2 must hold one bias per member")
        if len(self.quantile_levels) != self.residual_quantiles.shape[0]:
            raise ValueError("one residual quantile per level is required")
        if np.any(np.diff(self.residual_quantiles) < 0):
            raise ValueError("residual quantiles must be non-decreasing")
        if self.neighbours is not None and self.neighbour_hash_bits < self.hash_bits:
            raise ValueError("the neighbour index must hash at least as finely as the MLP")
        if len(self.blend) != BLEND_TERMS:
            raise ValueError(f"the blend has {BLEND_TERMS} coefficients")
        if (self.trees is None) != (self.vectors is None):
            raise ValueError("trees and their word vectors come together")
        if len(self.stack) != STACK_TERMS:
            raise ValueError(f"the stack has {STACK_TERMS} coefficients")
        if self.trees is not None and self.vectors is not None:
            expected = DENSE_FEATURES + CUE_COUNT + self.vectors.dim + len(self.classes)
            if self.trees.n_features != expected:
                raise ValueError(
                    f"the trees read {self.trees.n_features} features, the inputs have {expected}"
                )

    def to_arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        extra: dict[str, npt.NDArray[np.generic]] = {}
        if self.neighbours is not None:
            extra = self.neighbours.to_arrays(NEIGHBOUR_PREFIX)
            extra["neighbour_hash_bits"] = np.array(self.neighbour_hash_bits)
            extra["blend"] = np.array(self.blend, dtype=np.float64)
        if self.trees is not None and self.vectors is not None:
            extra |= self.trees.to_arrays(TREE_PREFIX) | self.vectors.to_arrays(VECTOR_PREFIX)
            extra["stack"] = np.array(self.stack, dtype=np.float64)
        return extra | {
            "hash_bits": np.array(self.hash_bits),
            "classes": np.array(self.classes, dtype=np.str_),
            "embeddings": self.embeddings.astype(np.float16),
            "dense_mean": self.dense_mean,
            "dense_std": self.dense_std,
            "w1": self.w1,
            "b1": self.b1,
            "w2": self.w2,
            "b2": self.b2,
            "quantile_levels": np.array(self.quantile_levels, dtype=np.float64),
            "residual_quantiles": self.residual_quantiles,
            "smearing": np.array(self.smearing, dtype=np.float64),
        }

    @classmethod
    def from_arrays(
        cls, arrays: "np.lib.npyio.NpzFile | dict[str, npt.NDArray[np.generic]]"
    ) -> "ProxyWeights":
        def f32(name: str) -> FloatArray:
            return np.asarray(arrays[name], dtype=np.float32)

        return cls(
            hash_bits=int(arrays["hash_bits"]),
            classes=tuple(str(c) for c in arrays["classes"]),
            embeddings=f32("embeddings").reshape(-1, *arrays["embeddings"].shape[-2:]),
            dense_mean=f32("dense_mean"),
            dense_std=f32("dense_std"),
            w1=f32("w1").reshape(-1, *arrays["w1"].shape[-2:]),
            b1=f32("b1").reshape(-1, arrays["b1"].shape[-1]),
            w2=f32("w2").reshape(-1, arrays["w2"].shape[-1]),
            b2=f32("b2").reshape(-1),
            quantile_levels=tuple(float(q) for q in arrays["quantile_levels"]),
            residual_quantiles=f32("residual_quantiles"),
            smearing=float(arrays["smearing"]),
            **_neighbour_fields(arrays),
            **_tree_fields(arrays),
        )

    def predict_log(self, prompt_text: str | None, prompt_tokens: int, slo_class: str) -> float:
        """z_hat before any online bias: the blend, stacked with the trees when the artifact has them."""
        bits = self.hash_bits if self.neighbours is None else self.neighbour_hash_bits
        features = prompt_features(prompt_text, prompt_tokens, hash_bits=bits)
        class_id = self.classes.index(slo_class) if slo_class in self.classes else -1
        z_blend = self.blend_log(features, prompt_text, slo_class, class_id)
        if self.trees is None or self.vectors is None:
            return z_blend
        x = tree_inputs(
            dense=features.dense,
            prompt_text=prompt_text,
            class_id=class_id,
            classes=len(self.classes),
            vectors=self.vectors,
        )
        e, f, g = self.stack
        return e * z_blend + f * self.trees.predict(x) + g

    def blend_log(
        self, features: PromptFeatures, prompt_text: str | None, slo_class: str, class_id: int
    ) -> float:
        """The MLP, blended with the neighbours when the prompt has any (z_blend above)."""
        z_mlp = self.mlp_log(features, slo_class)
        if self.neighbours is None or prompt_text is None:
            return z_mlp
        answer = self.neighbours.query(features.indices, class_id)
        if answer is None:
            return z_mlp
        return blended_log(self.blend, z_mlp, answer.log_length, answer.best_similarity)

    def mlp_log(self, features: PromptFeatures, slo_class: str) -> float:
        """The MLP's z_hat; `features` may be hashed more finely than the MLP's table (they are masked)."""
        mask = (1 << self.hash_bits) - 1
        bag = self.embeddings[:, [i & mask for i in features.indices]].mean(axis=1)
        dense = (np.asarray(features.dense, dtype=np.float32) - self.dense_mean) / self.dense_std
        onehot = np.zeros(len(self.classes), dtype=np.float32)
        if slo_class in self.classes:
            onehot[self.classes.index(slo_class)] = 1.0
        rest = np.broadcast_to(
            np.concatenate((dense, onehot)), (bag.shape[0], dense.shape[0] + onehot.shape[0])
        )
        x = np.concatenate((bag, rest), axis=1)
        hidden = np.maximum(np.einsum("mi,mih->mh", x, self.w1) + self.b1, 0.0)
        return float(np.mean(np.einsum("mh,mh->m", hidden, self.w2) + self.b2))


def blended_log(
    blend: tuple[float, float, float, float], z_mlp: float, z_neighbours: float, best_similarity: float
) -> float:
    """a*z_mlp + b*z_nn + c + d*(z_nn - z_mlp)*best_similarity: near-duplicates lean on their neighbours."""
    a, b, c, d = blend
    return a * z_mlp + b * z_neighbours + c + d * (z_neighbours - z_mlp) * best_similarity


def _neighbour_fields(
    arrays: "np.lib.npyio.NpzFile | dict[str, npt.NDArray[np.generic]]",
) -> dict[str, Any]:
    """The optional neighbour part of an artifact (absent in MLP-only artifacts)."""
    if f"{NEIGHBOUR_PREFIX}keys" not in arrays:
        return {}
    return {
        "neighbours": NeighbourIndex.from_arrays(arrays, NEIGHBOUR_PREFIX),
        "neighbour_hash_bits": int(arrays["neighbour_hash_bits"]),
        "blend": tuple(float(x) for x in arrays["blend"]),
    }


def _tree_fields(
    arrays: "np.lib.npyio.NpzFile | dict[str, npt.NDArray[np.generic]]",
) -> dict[str, Any]:
    """The optional tree part of an artifact (absent in artifacts trained with --no-trees)."""
    if f"{TREE_PREFIX}roots" not in arrays:
        return {}
    return {
        "trees": TreeEnsemble.from_arrays(arrays, TREE_PREFIX),
        "vectors": WordVectors.from_arrays(arrays, VECTOR_PREFIX),
        "stack": tuple(float(x) for x in arrays["stack"]),
    }


@dataclass
class _RunningBias:
    count: int = 0
    mean: float = 0.0

    def add(self, residual: float) -> None:
        self.count += 1
        self.mean += max(1.0 / self.count, MIN_RATE) * (residual - self.mean)


@dataclass
class ProxyLengthPredictor:
    """The proxy model behind the `OutputLengthPredictor` protocol, with per-class online correction."""

    weights: ProxyWeights
    _overall: _RunningBias = field(default_factory=_RunningBias)
    _by_class: dict[str, _RunningBias] = field(default_factory=dict)
    _offline: dict[tuple[str | None, int, str], float] = field(default_factory=dict)  # insertion = age

    def offline_log(self, prompt_text: str | None, prompt_tokens: int, slo_class: str) -> float:
        """The weights' z_hat (no online bias), from the OFFLINE_CACHE_SIZE most recent keys when there."""
        key = (prompt_text, prompt_tokens, slo_class)
        z = self._offline.get(key)
        if z is None:
            z = self.weights.predict_log(prompt_text, prompt_tokens, slo_class)
            if len(self._offline) >= OFFLINE_CACHE_SIZE:
                del self._offline[next(iter(self._offline))]  # the oldest
            self._offline[key] = z
        return z

    def bias(self, slo_class: str) -> float:
        """The log-space correction currently applied to `slo_class`."""
        own = self._by_class.get(slo_class)
        if own is None or own.count == 0:
            return self._overall.mean
        weight = own.count / (own.count + SHRINK)
        return weight * own.mean + (1.0 - weight) * self._overall.mean

    def predict(
        self, *, prompt_text: str | None, prompt_tokens: int, slo_class: str, max_tokens: int
    ) -> LengthPrediction:
        check_request(prompt_tokens=prompt_tokens, max_tokens=max_tokens)
        z_offline = self.offline_log(prompt_text, int(prompt_tokens), slo_class)
        z = z_offline + self.bias(slo_class)
        cap = float(max_tokens)
        levels = self.weights.quantile_levels
        values = np.minimum(np.expm1(np.maximum(z + self.weights.residual_quantiles, 0.0)), cap)
        mean = min(max(math.exp(z) * self.weights.smearing - 1.0, 0.0), cap)
        offline = min(max(math.exp(z_offline) * self.weights.smearing - 1.0, 0.0), cap)
        return LengthPrediction(
            mean_tokens=mean,
            quantiles={q: float(v) for q, v in zip(levels, values, strict=True)},
            rank_tokens=offline,
        )

    def observe(
        self,
        *,
        prompt_text: str | None,
        prompt_tokens: int,
        slo_class: str,
        max_tokens: int,
        output_tokens: int,
    ) -> None:
        check_observation(prompt_tokens=prompt_tokens, max_tokens=max_tokens, output_tokens=output_tokens)
        z = self.offline_log(prompt_text, int(prompt_tokens), slo_class)
        residual = math.log1p(output_tokens) - z
        if output_tokens >= max_tokens and residual < 0:
            return  # cut off by max_tokens: the true length is unknown, and at least what we predicted
        self._overall.add(residual)
        self._by_class.setdefault(slo_class, _RunningBias()).add(residual)


def load_weights(data: bytes) -> ProxyWeights:
    """Weights from the bytes of an .npz artifact; the arrays are made read-only so they can be shared."""
    with np.load(BytesIO(data), allow_pickle=False) as arrays:
        weights = ProxyWeights.from_arrays(arrays)
    w = weights
    for array in (w.embeddings, w.dense_mean, w.dense_std, w.w1, w.b1, w.w2, w.b2, w.residual_quantiles):
        array.flags.writeable = False
    if w.trees is not None and w.vectors is not None:
        w.trees.freeze()
        w.vectors.freeze()
    if w.neighbours is not None:
        n = w.neighbours
        for part in (n.keys, n.idf, n.indptr, n.rows, n.weights, n.row_log_length, n.row_class):
            part.flags.writeable = False
    return weights


@functools.cache
def _default_weights() -> ProxyWeights:
    return load_weights(resources.files("sloguard.predictor").joinpath(ARTIFACT_NAME).read_bytes())


def load_default_predictor() -> ProxyLengthPredictor:
    """A fresh predictor (no online state) over the weights shipped in the package (read once, shared)."""
    return ProxyLengthPredictor(_default_weights())
