"""Nearest-neighbour half of the output-length proxy: TF-IDF cosine kNN over the training prompts, numpy only.

Sits beside the MLP in `model` (which blends the two) and is built offline by
`sloguard.predictor.training.proxy`. Many real prompts are near-duplicates of a training prompt (the same task
pasted with other data), and for those the lengths of the neighbours' answers say more than any smooth model.

A prompt is its hashed n-gram features (`features`, the same ones the MLP reads), weighted
(1 + log count) * idf and L2-normalised. Features present in more than a share (`max_df`) of the training
prompts (stop words and other common words) are dropped at build time, so the postings stay short. The index
is an inverted file: sorted feature keys, their idf, and for each key the training rows holding it with
their normalised weights. A query keeps its `MAX_QUERY_FEATURES` heaviest features, scatters their weights
into per-row cosine scores (`np.bincount`), drops rows of another known training class (an unknown class
sees all rows) and rows below `min_similarity`, and the `k` best remaining rows give a similarity^power
weighted mean of their log lengths. It also returns the best similarity, which the blend uses to trust the
neighbours more when one is a near-duplicate. Cost: a few small gathers, one bincount over the training rows
and a partition of the few rows above `min_similarity`; about 0.1-0.3 ms for ~9k rows.
"""

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
OTHER_CLASS_PENALTY = 1.0
MAX_QUERY_FEATURES = 64


@dataclass(frozen=True, slots=True)
class NeighbourAnswer:
    """The neighbours' weighted mean log1p length and the best cosine similarity (0 when none matched)."""

    log_length: float
    best_similarity: float


@dataclass(frozen=True)
class NeighbourIndex:
    """Inverted TF-IDF index over training prompts; `to_arrays`/`from_arrays` are its on-disk form."""

    k: int
    power: float
    min_similarity: float
    keys: npt.NDArray[np.uint32]  # sorted hashed feature ids
    idf: FloatArray  # (len(keys),)
    indptr: npt.NDArray[np.int32]  # (len(keys) + 1,) into rows/weights
    rows: npt.NDArray[np.int32]  # postings: training row ids
    weights: FloatArray  # postings: the row's normalised tf-idf weight of the key (float16 on disk)
    row_log_length: FloatArray  # (n_rows,) log1p output tokens
    row_class: npt.NDArray[np.int8]  # (n_rows,) training class id of each row
    _penalties: dict[int, npt.NDArray[np.float64]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("k must be at least 1")
        if not 0.0 < self.min_similarity <= 1.0:
            raise ValueError("min_similarity must be in (0, 1]")
        if self.indptr.shape[0] != self.keys.shape[0] + 1 or self.idf.shape != self.keys.shape:
            raise ValueError("keys, idf and indptr do not match")
        if self.rows.shape != self.weights.shape or int(self.indptr[-1]) != self.rows.shape[0]:
            raise ValueError("postings do not match indptr")
        if self.row_class.shape != self.row_log_length.shape:
            raise ValueError("one class per training row is required")

    @classmethod
    def build(
        cls,
        features: Sequence[Sequence[int]],
        log_lengths: Sequence[float],
        class_ids: Sequence[int],
        *,
        k: int,
        power: float,
        min_similarity: float,
        max_df: float,
    ) -> "NeighbourIndex":
        """Index training prompts (their feature ids), dropping keys in more than `max_df` of them."""
        n = len(features)
        if n == 0 or len(log_lengths) != n or len(class_ids) != n:
            raise ValueError("one log length and one class per indexed prompt are required")
        counts = [Counter(f) for f in features]
        df: Counter[int] = Counter()
        for c in counts:
            df.update(c.keys())
        vocab = sorted(key for key, d in df.items() if d <= max_df * n)
        idf = {key: math.log(n / df[key]) for key in vocab}
        postings: dict[int, list[tuple[int, float]]] = {key: [] for key in vocab}
        for row, c in enumerate(counts):
            weighted = {key: (1.0 + math.log(v)) * idf[key] for key, v in c.items() if key in idf}
            norm = math.sqrt(sum(w * w for w in weighted.values()))
            if norm > 0:
                for key, w in weighted.items():
                    postings[key].append((row, w / norm))
        indptr = np.zeros(len(vocab) + 1, dtype=np.int32)
        indptr[1:] = np.cumsum([len(postings[key]) for key in vocab])
        flat = [entry for key in vocab for entry in postings[key]]
        return cls(
            k=k,
            power=power,
            min_similarity=min_similarity,
            keys=np.array(vocab, dtype=np.uint32),
            idf=np.array([idf[key] for key in vocab], dtype=np.float32),
            indptr=indptr,
            rows=np.array([r for r, _ in flat], dtype=np.int32),
            weights=np.array([w for _, w in flat], dtype=np.float16).astype(np.float32),
            row_log_length=np.asarray(log_lengths, dtype=np.float32),
            row_class=np.asarray(class_ids, dtype=np.int8),
        )

    def to_arrays(self, prefix: str) -> dict[str, npt.NDArray[np.generic]]:
        return {
            f"{prefix}k": np.array(self.k),
            f"{prefix}power": np.array(self.power, dtype=np.float64),
            f"{prefix}min_similarity": np.array(self.min_similarity, dtype=np.float64),
            f"{prefix}keys": self.keys,
            f"{prefix}idf": self.idf,
            f"{prefix}indptr": self.indptr,
            f"{prefix}rows": self.rows.astype(np.uint16 if self.row_class.shape[0] <= 1 << 16 else np.int32),
            f"{prefix}weights": self.weights.astype(np.float16),
            f"{prefix}row_log_length": self.row_log_length,
            f"{prefix}row_class": self.row_class,
        }

    @classmethod
    def from_arrays(
        cls, arrays: "np.lib.npyio.NpzFile | dict[str, npt.NDArray[np.generic]]", prefix: str
    ) -> "NeighbourIndex":
        return cls(
            k=int(arrays[f"{prefix}k"]),
            power=float(arrays[f"{prefix}power"]),
            min_similarity=float(arrays[f"{prefix}min_similarity"]),
            keys=np.asarray(arrays[f"{prefix}keys"], dtype=np.uint32),
            idf=np.asarray(arrays[f"{prefix}idf"], dtype=np.float32),
            indptr=np.asarray(arrays[f"{prefix}indptr"], dtype=np.int32),
            rows=np.asarray(arrays[f"{prefix}rows"], dtype=np.int32),
            weights=np.asarray(arrays[f"{prefix}weights"], dtype=np.float32),
            row_log_length=np.asarray(arrays[f"{prefix}row_log_length"], dtype=np.float32),
            row_class=np.asarray(arrays[f"{prefix}row_class"], dtype=np.int8),
        )

    def _penalty(self, class_id: int) -> npt.NDArray[np.float64]:
        """OTHER_CLASS_PENALTY on the rows of other classes (cached: it is on every query's path)."""
        cache: dict[int, npt.NDArray[np.float64]] = self._penalties
        if class_id not in cache:
            cache[class_id] = OTHER_CLASS_PENALTY * (self.row_class != class_id).astype(np.float64)
        return cache[class_id]

    def query(self, feature_ids: Sequence[int], class_id: int) -> NeighbourAnswer | None:
        """The neighbours' answer for one prompt, or None when it shares no indexed feature with any row.

        `class_id` is the request's training class id, or -1 for a class the index does not know (then
        all rows compete equally)."""
        ids, counts = np.unique(np.asarray(feature_ids, dtype=np.uint32), return_counts=True)
        pos = np.searchsorted(self.keys, ids)
        pos = np.minimum(pos, self.keys.shape[0] - 1)
        found = self.keys[pos] == ids
        if not found.any():
            return None
        pos = pos[found]
        q = (1.0 + np.log(counts[found].astype(np.float32))) * self.idf[pos]
        if q.shape[0] > MAX_QUERY_FEATURES:  # bound the work: keep the most telling features
            keep = np.argpartition(-q, MAX_QUERY_FEATURES - 1)[:MAX_QUERY_FEATURES]
            pos, q = pos[keep], q[keep]
        q /= np.sqrt(float(q @ q))
        starts, ends = self.indptr[pos], self.indptr[pos + 1]
        lengths = ends - starts
        if int(lengths.sum()) == 0:
            return None
        take = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
        scores = np.bincount(
            self.rows[take],
            weights=self.weights[take] * np.repeat(q, lengths),
            minlength=self.row_class.shape[0],
        )
        ranked = scores - self._penalty(class_id) if class_id >= 0 else scores
        top = np.flatnonzero(ranked >= self.min_similarity)
        if top.shape[0] == 0:
            return None
        if top.shape[0] > self.k:
            top = top[np.argpartition(-ranked[top], self.k - 1)[: self.k]]
        similarity = scores[top]
        weight = similarity**self.power
        log_length = float(weight @ self.row_log_length[top] / weight.sum())
        return NeighbourAnswer(log_length=log_length, best_similarity=float(similarity.max()))
