"""Prompt features for the output-length proxy model: hashed word n-grams plus a few dense statistics.

Sits under the proxy predictor (`model`) and its trainer (`sloguard.predictor.training.proxy`);
both must turn a prompt into exactly the same features, so this module is the single definition. Pure
and cheap (tens of microseconds per prompt): long prompts are cut to a head and a tail before any work,
and hashing uses CRC-32, which, unlike Python's `hash`, is the same in every process.

Sparse features (indices into a table of `2 ** hash_bits` rows):
- word unigrams and bigrams of the prompt's head (first `HEAD_WORDS` words), where task cues live
  ("write an essay", "translate", "list 10", "yes or no");
- word unigrams of the tail (last `TAIL_WORDS` words, a separate namespace): the question after a pasted text;
- the first three words by position, and a few shape cues (code fences, many lines, a question mark).
Dense features: log prompt tokens, log characters, log lines, share of code-like characters, the largest
number written in the prompt (as in "in 300 words"), and whether the text was given at all.
"""

import itertools
import math
import re
import zlib
from dataclasses import dataclass

HEAD_WORDS = 96
TAIL_WORDS = 24
HEAD_CHARS = 2000
TAIL_CHARS = 300
DENSE_FEATURES = 6

_WORD = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")
_NUMBER = re.compile(r"\b([0-9]{1,5})\b")
_CODE_CHARS = tuple("{}();=<>[]_/\\#*|&$")


@dataclass(frozen=True, slots=True)
class PromptFeatures:
    """The sparse indices (duplicates allowed, order irrelevant) and the dense vector of one prompt."""

    indices: tuple[int, ...]
    dense: tuple[float, ...]


def _bucket(token: str, mask: int) -> int:
    return zlib.crc32(token.encode("utf-8")) & mask


def prompt_features(prompt_text: str | None, prompt_tokens: int, *, hash_bits: int) -> PromptFeatures:
    """Features of one prompt; `prompt_text` None means only the token count is known."""
    if prompt_tokens < 0:
        raise ValueError(f"prompt_tokens must be non-negative, got {prompt_tokens}")
    mask = (1 << hash_bits) - 1
    log_tokens = math.log1p(prompt_tokens)
    if prompt_text is None:
        # Without text, characters are estimated at four per token, the usual English ratio.
        return PromptFeatures(
            indices=(_bucket("<no-text>", mask),),
            dense=(log_tokens, math.log1p(4.0 * prompt_tokens), 0.0, 0.0, 0.0, 0.0),
        )
    text = prompt_text
    n_chars = len(text)
    n_lines = text.count("\n") + 1
    if n_chars > HEAD_CHARS + TAIL_CHARS:
        head_text, tail_text = text[:HEAD_CHARS], text[-TAIL_CHARS:]
    else:
        head_text, tail_text = text, text[-TAIL_CHARS:]
    head = [m.group() for m in itertools.islice(_WORD.finditer(head_text.lower()), HEAD_WORDS)]
    tail = _WORD.findall(tail_text.lower())[-TAIL_WORDS:]
    tokens = [f"u:{w}" for w in head]
    tokens += [f"b:{a} {b}" for a, b in itertools.pairwise(head)]
    tokens += [f"t:{w}" for w in tail]
    tokens += [f"p{i}:{w}" for i, w in enumerate(head[:3])]
    if "```" in text:
        tokens.append("<code-fence>")
    if n_lines > 10:
        tokens.append("<many-lines>")
    if text.rstrip().endswith("?"):
        tokens.append("<ends-question>")
    if not tokens:
        tokens.append("<empty>")
    sample = head_text + tail_text
    code_share = sum(sample.count(ch) for ch in _CODE_CHARS) / max(1, len(sample))
    numbers = [int(n) for n in _NUMBER.findall(head_text)]
    largest = math.log1p(max(numbers)) if numbers else 0.0
    return PromptFeatures(
        indices=tuple(_bucket(t, mask) for t in tokens),
        dense=(log_tokens, math.log1p(n_chars), math.log1p(n_lines), code_share, largest, 1.0),
    )
