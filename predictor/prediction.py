"""The output-length predictor's interface: what every policy asks, and what every predictor answers.

Policies (sjf, sa, scorpio, sloguard) and the latency model consume `LengthPrediction`s; predictors
implement `OutputLengthPredictor`. The trained proxy model, the baselines and oracle predictors (true
lengths, for benchmark bounds) all live behind this one protocol. Pure: no I/O beyond what a
predictor's constructor is handed, no clock.
"""

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class LengthPrediction:
    """Predicted output tokens: a point estimate and quantiles of the predictive distribution.

    `quantiles` maps probability levels in (0, 1) to token counts, non-decreasing in the level.
    `quantile(q)` interpolates linearly between the given levels and clamps outside them.
    `rank_tokens`: for a predictor that corrects itself online, its answer without that correction, so
    predictions made at different times still order requests consistently (a shift learned between two
    arrivals moves only the later one's mean); None when the mean itself is that (`rank_key`).
    """

    mean_tokens: float
    quantiles: Mapping[float, float] = field(default_factory=dict)
    rank_tokens: float | None = None

    @property
    def rank_key(self) -> float:
        """What to order requests by, shortest first: `rank_tokens` when given, else the mean."""
        return self.mean_tokens if self.rank_tokens is None else self.rank_tokens

    def __post_init__(self) -> None:
        if not math.isfinite(self.mean_tokens) or self.mean_tokens < 0:
            raise ValueError(f"mean_tokens must be a finite non-negative number, got {self.mean_tokens!r}")
        if self.rank_tokens is not None and (not math.isfinite(self.rank_tokens) or self.rank_tokens < 0):
            raise ValueError(f"rank_tokens must be a finite non-negative number, got {self.rank_tokens!r}")
        levels = sorted(self.quantiles)
        if any(not 0.0 < q < 1.0 for q in levels):
            raise ValueError(f"quantile levels must lie in (0, 1), got {levels}")
        values = [self.quantiles[q] for q in levels]
        if any(not math.isfinite(v) or v < 0 for v in values) or values != sorted(values):
            raise ValueError(f"quantile values must be finite, non-negative and non-decreasing, got {values}")

    def quantile(self, level: float) -> float:
        """Tokens at probability `level`; the mean when no quantiles are known."""
        if not self.quantiles:
            return self.mean_tokens
        levels = sorted(self.quantiles)
        if level <= levels[0]:
            return self.quantiles[levels[0]]
        if level >= levels[-1]:
            return self.quantiles[levels[-1]]
        upper = bisect.bisect_left(levels, level)
        lo, hi = levels[upper - 1], levels[upper]
        weight = (level - lo) / (hi - lo)
        return self.quantiles[lo] + weight * (self.quantiles[hi] - self.quantiles[lo])


class OutputLengthPredictor(Protocol):
    """Predicts how many tokens a request will generate, and learns from completed requests."""

    def predict(
        self, *, prompt_text: str | None, prompt_tokens: int, slo_class: str, max_tokens: int
    ) -> LengthPrediction:
        """Predict output tokens; the answer never exceeds `max_tokens`."""
        ...

    def observe(
        self,
        *,
        prompt_text: str | None,
        prompt_tokens: int,
        slo_class: str,
        max_tokens: int,
        output_tokens: int,
    ) -> None:
        """Online correction from a completed request's true output length."""
        ...
