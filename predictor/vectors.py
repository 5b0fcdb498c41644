"""Static word vectors for the output-length trees: one dense vector per prompt from a word lookup table.

Sits under `trees.tree_inputs`; the table is built offline by `sloguard.predictor.training.proxy`
(`build_word_vectors` there) and shipped inside the model artifact, so serving is a dictionary lookup and a
small weighted sum in numpy. A prompt's vector is the idf-weighted sum of the vectors of its words (the first
`HEAD_WORDS` words of its head and the last `TAIL_WORDS` of its tail, lower-cased letters only), scaled to
unit length; zeros when no word is in the table or the text is unknown.

The words are stored as one newline-joined UTF-8 byte array (compact, no pickling) and the vectors as
float16 on disk.
"""

import re
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

HEAD_CHARS = 2000
TAIL_CHARS = 300
HEAD_WORDS = 200
TAIL_WORDS = 30
FloatArray = npt.NDArray[np.float32]

_WORD = re.compile(r"[a-z]+")


def prompt_words(prompt_text: str) -> list[str]:
    """The words a prompt's vector is made of (also what the table's vocabulary is counted over)."""
    head = _WORD.findall(prompt_text[:HEAD_CHARS].lower())[:HEAD_WORDS]
    tail = _WORD.findall(prompt_text[-TAIL_CHARS:].lower())[-TAIL_WORDS:]
    return head + tail


@dataclass(frozen=True)
class WordVectors:
    """A word table: `words[i]` has weight `idf[i]` and vector `vectors[i]`."""

    words: tuple[str, ...]
    idf: FloatArray  # (V,)
    vectors: FloatArray  # (V, dim)
    _row: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.words):
            raise ValueError("one vector per word is required")
        if self.idf.shape != (len(self.words),):
            raise ValueError("one idf weight per word is required")
        if len(set(self.words)) != len(self.words):
            raise ValueError("words must be unique")
        self._row.update((word, i) for i, word in enumerate(self.words))

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def embed(self, prompt_text: str | None) -> FloatArray:
        """The unit-length idf-weighted word vector of a prompt (zeros when nothing is known)."""
        if prompt_text is None:
            return np.zeros(self.dim, dtype=np.float32)
        row = self._row
        ids = [i for i in (row.get(w) for w in prompt_words(prompt_text)) if i is not None]
        if not ids:
            return np.zeros(self.dim, dtype=np.float32)
        picked = np.asarray(ids, dtype=np.intp)
        total = self.idf[picked] @ self.vectors[picked]
        norm = float(np.sqrt(total @ total))
        return (total / norm).astype(np.float32) if norm > 0 else np.zeros(self.dim, dtype=np.float32)

    def to_arrays(self, prefix: str) -> dict[str, npt.NDArray[np.generic]]:
        joined = "\n".join(self.words).encode("utf-8")
        return {
            f"{prefix}words": np.frombuffer(joined, dtype=np.uint8).copy(),
            f"{prefix}idf": self.idf.astype(np.float32),
            f"{prefix}vectors": self.vectors.astype(np.float16),
        }

    @classmethod
    def from_arrays(
        cls, arrays: "np.lib.npyio.NpzFile | dict[str, npt.NDArray[np.generic]]", prefix: str
    ) -> "WordVectors":
        raw = np.asarray(arrays[f"{prefix}words"], dtype=np.uint8).tobytes().decode("utf-8")
        return cls(
            words=tuple(raw.split("\n")) if raw else (),
            idf=np.asarray(arrays[f"{prefix}idf"], dtype=np.float32),
            vectors=np.asarray(arrays[f"{prefix}vectors"], dtype=np.float32),
        )

    def freeze(self) -> None:
        self.idf.flags.writeable = False
        self.vectors.flags.writeable = False
