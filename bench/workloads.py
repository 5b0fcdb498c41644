"""Real workloads for the benchmarks: ShareGPT prompts with their real reply lengths, the Azure 2023 trace.

Called by the scenario modules (`sloguard.bench.scorpio`, `ssjf`, `sa`, `trace`). Reads shared/data (see its
README; `$SLOGUARD_DATA_DIR` overrides the location). Token counts use the real Qwen2.5 tokenizer, as the
output-length predictor was trained with (`sloguard.predictor.training.dataset`). Only the predictor's *test*
split is used, so no benchmark prompt was seen in training. Arrivals are seeded; nothing reads a clock.
"""

import csv
import functools
import json
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sloguard.predictor.training.dataset import SHAREGPT_FILE, Split, qwen_token_counter, split_of
from sloguard.predictor_command import default_data_dir

AZURE_CONV_FILE = Path("azure_llm_inference_2023") / "AzureLLMInferenceTrace_conv.csv"
AZURE_CODE_FILE = Path("azure_llm_inference_2023") / "AzureLLMInferenceTrace_code.csv"


@dataclass(frozen=True, slots=True)
class PromptRow:
    """One real prompt and the length of its real reply, in tokens."""

    row_id: str
    prompt_text: str
    prompt_tokens: int
    output_tokens: int


def data_dir() -> Path:
    path = default_data_dir()
    if not (path / SHAREGPT_FILE).is_file():
        raise FileNotFoundError(f"benchmark data missing: {path / SHAREGPT_FILE} (set SLOGUARD_DATA_DIR)")
    return path


@functools.cache
def sharegpt_test_rows() -> tuple[PromptRow, ...]:
    """The predictor's test split of ShareGPT first turns, in file order, with token counts."""
    count = qwen_token_counter()
    rows = []
    with (data_dir() / SHAREGPT_FILE).open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if split_of(f"sharegpt:{record['id']}") is not Split.TEST:
                continue
            prompt, response = str(record["prompt"]), str(record["response"])
            rows.append(PromptRow(str(record["id"]), prompt, count(prompt), count(response)))
    return tuple(rows)


def scorpio_filter(row: PromptRow) -> bool:
    """SCORPIO's request filter: prompt 4-1024 tokens, prompt + output <= 2048, output >= 4."""
    return (
        4 <= row.prompt_tokens <= 1024
        and row.prompt_tokens + row.output_tokens <= 2048
        and row.output_tokens >= 4
    )


def sample_rows(count: int, seed: int) -> list[PromptRow]:
    """`count` rows passing SCORPIO's filter, drawn without replacement (with replacement past the pool)."""
    pool = [row for row in sharegpt_test_rows() if scorpio_filter(row)]
    rng = random.Random(seed)
    if count <= len(pool):
        return rng.sample(pool, count)
    return [rng.choice(pool) for _ in range(count)]


def poisson_arrivals(count: int, rate_rps: float, seed: int) -> list[float]:
    """Arrival times of a Poisson process (Gamma inter-arrivals of shape 1, as SCORPIO's client)."""
    if rate_rps <= 0:
        raise ValueError(f"rate must be > 0, got {rate_rps}")
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(count):
        t += rng.expovariate(rate_rps)
        out.append(t)
    return out


@dataclass(frozen=True, slots=True)
class TraceRow:
    arrival_s: float  # from the first row of the trace
    prompt_tokens: int
    output_tokens: int


def _parse_timestamp(text: str) -> float:
    """`YYYY-MM-DD HH:MM:SS.fffffff` (7 fraction digits, no zone) as seconds since the epoch (naive)."""
    whole, _, fraction = text.strip().partition(".")
    base = datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").timestamp()
    return base + (float(f"0.{fraction}") if fraction else 0.0)


@functools.cache
def azure_conv_trace() -> tuple[TraceRow, ...]:
    """The Azure LLM inference 2023 conversation trace, times relative to its first request."""
    return _azure_trace(AZURE_CONV_FILE)


@functools.cache
def azure_code_trace() -> tuple[TraceRow, ...]:
    """The Azure LLM inference 2023 code trace, times relative to its first request."""
    return _azure_trace(AZURE_CODE_FILE)


def _azure_trace(relative: Path) -> tuple[TraceRow, ...]:
    path = data_dir() / relative
    rows: list[tuple[float, int, int]] = []
    with path.open(encoding="utf-8", newline="") as handle:
        for record in csv.DictReader(handle):
            rows.append(
                (
                    _parse_timestamp(record["TIMESTAMP"]),
                    int(record["ContextTokens"]),
                    int(record["GeneratedTokens"]),
                )
            )
    if not rows:
        raise ValueError(f"{path} holds no requests")
    start = rows[0][0]
    return tuple(TraceRow(t - start, p, o) for t, p, o in rows)
