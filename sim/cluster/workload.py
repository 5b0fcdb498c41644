"""The autoscaling scenario's workload: Azure 2023 conversation arrivals plus a batch backlog.

Read by the cluster simulation's benchmark (`sloguard.bench.autoscale`) and its tests. The interactive
stream is the Azure LLM inference conversation trace (Splitwise, ISCA'24; shared/data/README.md §1):
real arrival times and token counts. `scale_rate` multiplies its arrival rate by an integer k while
keeping the shape of its rate curve: every gap between two real arrivals is split into k equal gaps,
and the inserted arrivals take the token counts of rows spread evenly over the trace. The batch
backlog is a seeded sample of the same trace's token counts, all submitted at one instant with one
deadline. Classes follow Chiron's placeholders (papers.md §6.6): interactive TTFT 1 s (the tight
end of its 1–10 s) and TPOT 100 ms (the middle of its 50–200 ms ITL); batch TPOT 200 ms (relaxed)
and a deadline (one hour by default). No clock; reading the CSV is the only I/O.
"""

import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sloguard.api.sidecar_config import SLOClassConfig
from sloguard.sidecar.core.requests import RequestSpec

AZURE_CONV = (
    Path(__file__).resolve().parents[3]
    / "shared/data/azure_llm_inference_2023/AzureLLMInferenceTrace_conv.csv"
)

INTERACTIVE = SLOClassConfig(
    name="interactive", ttft_s=1.0, tpot_s=0.1, priority=100, attainment_target=0.99, default=True
)


def batch_class(deadline_s: float = 3600.0) -> SLOClassConfig:
    """Batch: only the deadline matters (its TTFT target is the deadline, TPOT relaxed to 200 ms)."""
    return SLOClassConfig(
        name="batch", ttft_s=deadline_s, tpot_s=0.2, deadline_s=deadline_s, priority=0, attainment_target=0.99
    )


@dataclass(frozen=True, slots=True)
class TraceRow:
    arrival_s: float  # from the first row
    prompt_tokens: int
    output_tokens: int


def _parse_time_s(text: str) -> float:
    # The trace's fraction has 7 digits; strptime takes 6.
    date, _, fraction = text.strip().partition(".")
    base = datetime.strptime(date, "%Y-%m-%d %H:%M:%S")
    return base.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


def load_azure_trace(path: Path = AZURE_CONV) -> list[TraceRow]:
    """Rows of an Azure 2023 trace CSV (TIMESTAMP, ContextTokens, GeneratedTokens), times from the first."""
    if not path.is_file():
        raise FileNotFoundError(f"Azure trace not found at {path} (see shared/data/README.md)")
    rows: list[tuple[float, int, int]] = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            try:
                rows.append(
                    (_parse_time_s(row["TIMESTAMP"]), int(row["ContextTokens"]), int(row["GeneratedTokens"]))
                )
            except ValueError as err:
                raise ValueError(f"{path}:{line}: {err}") from err
    if not rows:
        raise ValueError(f"{path}: no rows")
    rows.sort(key=lambda r: r[0])
    start = rows[0][0]
    return [TraceRow(t - start, p, o) for t, p, o in rows]


def window(rows: Sequence[TraceRow], span_s: float) -> list[TraceRow]:
    """The rows arriving in the first `span_s` seconds."""
    return [r for r in rows if r.arrival_s < span_s]


def scale_rate(rows: Sequence[TraceRow], factor: int) -> list[TraceRow]:
    """Arrival rate × `factor` with the same rate curve: each gap split into `factor` equal gaps."""
    if factor < 1:
        raise ValueError(f"rate factor must be >= 1, got {factor}")
    n = len(rows)
    out: list[TraceRow] = []
    for i, row in enumerate(rows):
        gap = rows[i + 1].arrival_s - row.arrival_s if i + 1 < n else 0.0
        for j in range(factor):
            donor = rows[(i + j * n // factor) % n]
            out.append(TraceRow(row.arrival_s + gap * j / factor, donor.prompt_tokens, donor.output_tokens))
    return out


@dataclass(frozen=True, slots=True)
class LengthLimits:
    """Engine limits the requests must fit: prompts are clipped so prompt + max_tokens fits the model."""

    max_model_len: int = 8192
    max_tokens: int = 1024

    @property
    def max_prompt_tokens(self) -> int:
        return self.max_model_len - self.max_tokens


def interactive_requests(
    rows: Sequence[TraceRow], limits: LengthLimits = LengthLimits(), slo_class: SLOClassConfig = INTERACTIVE
) -> list[RequestSpec]:
    return [
        RequestSpec.from_class(
            slo_class,
            request_id=f"i{i}",
            prompt_tokens=min(row.prompt_tokens, limits.max_prompt_tokens),
            max_tokens=limits.max_tokens,
            arrival_s=row.arrival_s,
            true_output_tokens=min(row.output_tokens, limits.max_tokens),
        )
        for i, row in enumerate(rows)
    ]


def batch_backlog(
    rows: Sequence[TraceRow],
    count: int,
    slo_class: SLOClassConfig,
    *,
    seed: int,
    arrival_s: float = 0.0,
    limits: LengthLimits = LengthLimits(),
) -> list[RequestSpec]:
    """`count` batch requests submitted together at `arrival_s`, token counts sampled from `rows`."""
    rng = random.Random(seed)
    picks = rng.choices(list(rows), k=count)
    return [
        RequestSpec.from_class(
            slo_class,
            request_id=f"b{i}",
            prompt_tokens=min(row.prompt_tokens, limits.max_prompt_tokens),
            max_tokens=limits.max_tokens,
            arrival_s=arrival_s,
            true_output_tokens=min(row.output_tokens, limits.max_tokens),
        )
        for i, row in enumerate(picks)
    ]
