"""The demo's workload: real arrival times, real prompts with their real reply lengths, a mix of classes.

Arrivals are the Azure LLM inference 2023 conversation trace (`AzureLLMInferenceTrace_conv.csv`, Splitwise,
ISCA'24; it carries no prompt text), replayed from its first request with the gaps divided by
`rate_scale`. Each arrival gets a ShareGPT first-turn prompt (`sharegpt_v3_first_turn.jsonl`) drawn with a
seeded generator, and the reply length ChatGPT actually gave to that prompt (`output_tokens_approx`, capped
at `max_tokens`) becomes the length the simulated engine generates (sent as `min_tokens`, with the engine's
own EOS draw disabled), so the sidecar's predictor sees real prompt text against real lengths. Classes are
drawn from `mix`. Deterministic for a seed. Reads files only; called by sloguard/demo/runner.py.
"""

import csv
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
AZURE_CONV = Path("azure_llm_inference_2023") / "AzureLLMInferenceTrace_conv.csv"
SHAREGPT = Path("sharegpt_v3_first_turn") / "sharegpt_v3_first_turn.jsonl"
MAX_PROMPT_TOKENS = 1024  # longer ShareGPT prompts are skipped (a few pasted documents dominate otherwise)


class WorkloadError(ValueError):
    """The trace or prompt file is missing or unreadable."""


@dataclass(frozen=True, slots=True)
class DemoRequest:
    index: int
    arrival_s: float  # engine seconds after the start of the replay
    slo_class: str
    prompt: str
    output_tokens: int  # what the engine will generate (the real reply's length, capped)
    max_tokens: int


def _timestamp_s(text: str) -> float:
    # "2023-11-16 18:15:46.6805900": seven fractional digits, strptime takes six
    date, _, fraction = text.strip().partition(".")
    whole = datetime.strptime(date, "%Y-%m-%d %H:%M:%S").timestamp()
    return whole + (float(f"0.{fraction}") if fraction else 0.0)


def azure_arrivals_s(path: Path) -> list[float]:
    """Arrival times in seconds after the trace's first request."""
    try:
        with path.open(newline="") as handle:
            stamps = [_timestamp_s(row["TIMESTAMP"]) for row in csv.DictReader(handle)]
    except (OSError, KeyError, ValueError) as error:
        raise WorkloadError(f"cannot read the Azure trace {path}: {error}") from error
    if not stamps:
        raise WorkloadError(f"the Azure trace {path} has no rows")
    first = stamps[0]
    return [t - first for t in stamps]


def sharegpt_prompts(path: Path) -> list[tuple[str, int]]:
    """(prompt, reply tokens) for every row with a prompt of at most MAX_PROMPT_TOKENS."""
    rows: list[tuple[str, int]] = []
    try:
        with path.open() as handle:
            for line in handle:
                row = json.loads(line)
                prompt_tokens = int(row["prompt_tokens_approx"])
                reply_tokens = int(row["output_tokens_approx"])
                if prompt_tokens <= MAX_PROMPT_TOKENS and reply_tokens >= 2:
                    rows.append((str(row["prompt"]), reply_tokens))
    except (OSError, KeyError, ValueError) as error:
        raise WorkloadError(f"cannot read the ShareGPT prompts {path}: {error}") from error
    if not rows:
        raise WorkloadError(f"no usable prompts in {path}")
    return rows


def build_workload(
    arrivals_s: Sequence[float],
    prompts: Sequence[tuple[str, int]],
    *,
    duration_s: float,
    rate_scale: float,
    mix: Mapping[str, float],
    max_tokens: int,
    seed: int = 0,
) -> list[DemoRequest]:
    """The requests arriving in the first `duration_s` engine seconds of the replay."""
    if rate_scale <= 0 or duration_s <= 0 or max_tokens < 2 or not mix:
        raise ValueError("rate_scale and duration_s must be > 0, max_tokens >= 2, mix non-empty")
    rng = random.Random(seed)
    names, weights = list(mix), list(mix.values())
    requests: list[DemoRequest] = []
    for arrival in arrivals_s:
        at_s = arrival / rate_scale
        if at_s >= duration_s:
            break
        prompt, reply_tokens = prompts[rng.randrange(len(prompts))]
        requests.append(
            DemoRequest(
                index=len(requests),
                arrival_s=at_s,
                slo_class=rng.choices(names, weights)[0],
                prompt=prompt,
                output_tokens=min(reply_tokens, max_tokens),
                max_tokens=max_tokens,
            )
        )
    return requests


def load_workload(
    data_dir: Path,
    *,
    duration_s: float,
    rate_scale: float,
    mix: Mapping[str, float],
    max_tokens: int,
    seed: int = 0,
) -> list[DemoRequest]:
    return build_workload(
        azure_arrivals_s(data_dir / AZURE_CONV),
        sharegpt_prompts(data_dir / SHAREGPT),
        duration_s=duration_s,
        rate_scale=rate_scale,
        mix=mix,
        max_tokens=max_tokens,
        seed=seed,
    )
