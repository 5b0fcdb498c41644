"""Real workloads for the benchmarks: ShareGPT prompts with their real reply lengths, the Azure 2023 trace,
the Mooncake FAST'25 traces with their prefix-block hashes.

Called by the scenario modules (`sloguard.bench.scorpio`, `ssjf`, `sa`, `trace`). Reads shared/data (see its
README; `$SLOGUARD_DATA_DIR` overrides the location). Token counts use the real Qwen2.5 tokenizer, as the
output-length predictor was trained with (`sloguard.predictor.training.dataset`). Only the predictor's *test*
split is used, so no benchmark prompt was seen in training. Arrivals are seeded; nothing reads a clock.
"""

import csv
import functools
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sloguard.predictor.training.dataset import SHAREGPT_FILE, Split, qwen_token_counter, split_of
from sloguard.predictor_command import default_data_dir

AZURE_CONV_FILE = Path("azure_llm_inference_2023") / "AzureLLMInferenceTrace_conv.csv"
AZURE_CODE_FILE = Path("azure_llm_inference_2023") / "AzureLLMInferenceTrace_code.csv"
MOONCAKE_CONVERSATION_FILE = Path("mooncake_fast25") / "conversation_trace.jsonl"
MOONCAKE_SYNTHETIC_FILE = Path("mooncake_fast25") / "synthetic_trace.jsonl"
MOONCAKE_BLOCK_TOKENS = 512  # tokens per Mooncake hash block (shared/data/README.md)


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


@dataclass(frozen=True, slots=True)
class MooncakeRow:
    """One Mooncake request: `hash_ids` name its prompt's blocks of MOONCAKE_BLOCK_TOKENS tokens (the last
    may be partial); equal ids are reusable prefix KV blocks. Pass them to the simulator as
    `SimRequest(..., prefix_hashes=row.hash_ids, prefix_block_tokens=MOONCAKE_BLOCK_TOKENS)`."""

    arrival_s: float  # from the trace start (the conversation trace lies on a ~3 s grid)
    prompt_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...]


@functools.cache
def mooncake_conversation_trace() -> tuple[MooncakeRow, ...]:
    """Mooncake's conversation trace (one hour of Kimi traffic), in file order."""
    return _mooncake_trace(MOONCAKE_CONVERSATION_FILE)


@functools.cache
def mooncake_synthetic_trace() -> tuple[MooncakeRow, ...]:
    """Mooncake's synthetic trace (public datasets, Poisson arrivals), in file order."""
    return _mooncake_trace(MOONCAKE_SYNTHETIC_FILE)


def _mooncake_trace(relative: Path) -> tuple[MooncakeRow, ...]:
    path = data_dir() / relative
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                row = MooncakeRow(
                    float(record["timestamp"]) / 1000.0,
                    int(record["input_length"]),
                    int(record["output_length"]),
                    tuple(int(h) for h in record["hash_ids"]),
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a Mooncake trace record: {exc}") from exc
            if len(row.hash_ids) != -(-row.prompt_tokens // MOONCAKE_BLOCK_TOKENS):
                raise ValueError(
                    f"{path}:{number}: {len(row.hash_ids)} hash ids do not cover {row.prompt_tokens} "
                    f"tokens in blocks of {MOONCAKE_BLOCK_TOKENS}"
                )
            rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no requests")
    return tuple(rows)


def mooncake_block_reuse(rows: Sequence[MooncakeRow]) -> float:
    """The share of the rows' prefix blocks whose hash id appeared earlier in them (the README's 0.366
    for the whole conversation trace)."""
    seen: set[int] = set()
    total = reused = 0
    for row in rows:
        total += len(row.hash_ids)
        reused += sum(1 for h in row.hash_ids if h in seen)
        seen.update(row.hash_ids)
    return reused / total if total else 0.0


def mooncake_implied_hit_rate(rows: Sequence[MooncakeRow], block_size: int) -> float:
    """The prefix-cache hit rate the rows imply for an engine of `block_size`-token blocks with a cache
    that never evicts, one request at a time, in vLLM's units (hit tokens / prompt tokens): the leading
    run of hash blocks seen before, at most prompt - 1 tokens rounded down to whole engine blocks."""
    seen: set[int] = set()
    hits = queries = 0
    for row in rows:
        lead = 0
        while lead < len(row.hash_ids) and row.hash_ids[lead] in seen:
            lead += 1
        cap = (row.prompt_tokens - 1) // block_size * block_size
        hits += min(lead * MOONCAKE_BLOCK_TOKENS // block_size * block_size, cap)
        queries += row.prompt_tokens
        seen.update(row.hash_ids)
    return hits / queries if queries else 0.0
