"""Boosted regression trees of the output-length proxy, as plain numpy arrays evaluated without lightgbm.

Sits in `model` (which stacks the trees' answer on the MLP/neighbour blend); the trees are fitted
offline with lightgbm by `sloguard.predictor.training.proxy` and converted by
`sloguard.predictor.training.tree_export`. Serving needs numpy only.

Layout: every node of every tree in flat arrays (`feature`, `threshold`, `left`, `right`, `value`), with
global node ids; `roots[t]` is tree t's root. A leaf points to itself on both sides (its threshold is +inf),
so walking all trees together for `depth` steps ends every tree on its leaf, whatever its own depth: one
step is a handful of vectorised gathers over all trees at once, never a Python loop over trees. The answer
is `base + sum of the leaves reached`. A split sends x to the left when `x[feature] <= threshold`, as
lightgbm's numerical splits do (inputs never hold NaN: `tree_inputs` writes only finite numbers).

`tree_inputs` is the single definition of the trees' input vector: the prompt's dense statistics
(`features`), its instruction cues (`cues`), its static word vector (`vectors`) and the
class one-hot (all -1 for a class that is not a training class; training shows the trees a copy of every
row with the class hidden that way).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sloguard.predictor.cues import cue_vector
from sloguard.predictor.vectors import WordVectors

Float64Array = npt.NDArray[np.float64]
Int32Array = npt.NDArray[np.int32]


@dataclass(frozen=True)
class TreeEnsemble:
    """A sum of regression trees; `to_arrays`/`from_arrays` are its on-disk form."""

    n_features: int
    depth: int  # steps that take every tree from its root to a leaf
    base: float
    roots: Int32Array  # (trees,)
    feature: Int32Array  # (nodes,) split feature; 0 at leaves
    threshold: Float64Array  # (nodes,) go left when x[feature] <= threshold; +inf at leaves
    left: Int32Array  # (nodes,) global id of the left child; the node itself at leaves
    right: Int32Array  # (nodes,)
    value: Float64Array  # (nodes,) leaf value; 0 at inner nodes

    def __post_init__(self) -> None:
        nodes = self.feature.shape[0]
        for name in ("threshold", "left", "right", "value"):
            if getattr(self, name).shape != (nodes,):
                raise ValueError(f"{name} must hold one entry per node ({nodes})")
        if self.roots.ndim != 1 or self.roots.shape[0] == 0:
            raise ValueError("at least one tree is required")
        for name in ("roots", "left", "right"):
            ids = getattr(self, name)
            if ids.min() < 0 or ids.max() >= nodes:
                raise ValueError(f"{name} points outside the node arrays")
        if nodes and (self.feature.min() < 0 or self.feature.max() >= self.n_features):
            raise ValueError("a split reads a feature outside the input vector")
        if self.depth < 0:
            raise ValueError("depth must be non-negative")
        leaves = (self.left == np.arange(nodes)) & (self.right == np.arange(nodes))
        if not np.all(np.isinf(self.threshold[leaves])):
            raise ValueError("a leaf must have an infinite threshold")

    @property
    def trees(self) -> int:
        return int(self.roots.shape[0])

    def predict(self, x: Float64Array) -> float:
        """The sum over trees for one input vector of `n_features` numbers."""
        if x.shape != (self.n_features,):
            raise ValueError(f"expected {self.n_features} features, got shape {x.shape}")
        node = self.roots
        for _ in range(self.depth):
            go_left = x[self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        return self.base + float(self.value[node].sum())

    def predict_many(self, x: Float64Array) -> Float64Array:
        """The sum over trees for each row of `x` (rows, n_features)."""
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected (rows, {self.n_features}) features, got shape {x.shape}")
        node = np.broadcast_to(self.roots, (x.shape[0], self.trees))
        row = np.arange(x.shape[0])[:, None]
        for _ in range(self.depth):
            go_left = x[row, self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        total: Float64Array = self.base + self.value[node].sum(axis=1)
        return total

    def to_arrays(self, prefix: str) -> dict[str, npt.NDArray[np.generic]]:
        small = np.int16 if self.feature.shape[0] < 1 << 15 else np.int32
        return {
            f"{prefix}n_features": np.array(self.n_features),
            f"{prefix}depth": np.array(self.depth),
            f"{prefix}base": np.array(self.base, dtype=np.float64),
            f"{prefix}roots": self.roots.astype(np.int32),
            f"{prefix}feature": self.feature.astype(np.int16 if self.n_features < 1 << 15 else np.int32),
            f"{prefix}threshold": self.threshold,
            f"{prefix}left": self.left.astype(small),
            f"{prefix}right": self.right.astype(small),
            f"{prefix}value": self.value,
        }

    @classmethod
    def from_arrays(
        cls, arrays: "np.lib.npyio.NpzFile | dict[str, npt.NDArray[np.generic]]", prefix: str
    ) -> "TreeEnsemble":
        def ints(name: str) -> Int32Array:
            return np.asarray(arrays[f"{prefix}{name}"], dtype=np.int32)

        def floats(name: str) -> Float64Array:
            return np.asarray(arrays[f"{prefix}{name}"], dtype=np.float64)

        return cls(
            n_features=int(arrays[f"{prefix}n_features"]),
            depth=int(arrays[f"{prefix}depth"]),
            base=float(arrays[f"{prefix}base"]),
            roots=ints("roots"),
            feature=ints("feature"),
            threshold=floats("threshold"),
            left=ints("left"),
            right=ints("right"),
            value=floats("value"),
        )

    def freeze(self) -> None:
        for part in (self.roots, self.feature, self.threshold, self.left, self.right, self.value):
            part.flags.writeable = False


def tree_inputs(
    *,
    dense: Sequence[float],
    prompt_text: str | None,
    class_id: int,
    classes: int,
    vectors: WordVectors,
) -> Float64Array:
    """The trees' input vector: dense statistics, cues, word vector, class one-hot (-1s when unknown)."""
    onehot = np.full(classes, -1.0)
    if class_id >= 0:
        onehot[:] = 0.0
        onehot[class_id] = 1.0
    x = np.concatenate(
        (
            np.asarray(dense, dtype=np.float64),
            np.asarray(cue_vector(prompt_text), dtype=np.float64),
            vectors.embed(prompt_text).astype(np.float64),
            onehot,
        )
    )
    finite: Float64Array = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return finite
