"""Simple output-length predictors: a fixed guess and a per-class running mean with quantiles.

Baselines behind the `OutputLengthPredictor` protocol (sloguard.predictor.prediction) for tests,
benchmarks and a sidecar started without the trained proxy model. The per-class mean learns online from
completed requests; its quantiles assume an exponential spread around the mean (LLM output lengths are
heavy-tailed), clipped at `max_tokens`. Pure.
"""

import math

from sloguard.predictor.prediction import LengthPrediction

QUANTILE_LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)


def exponential_prediction(mean_tokens: float, max_tokens: int) -> LengthPrediction:
    """A prediction with mean `mean_tokens` and exponential quantiles, everything capped at max_tokens."""
    mean = max(mean_tokens, 0.0)
    quantiles = {q: min(float(max_tokens), -mean * math.log(1.0 - q)) for q in QUANTILE_LEVELS}
    return LengthPrediction(mean_tokens=min(mean, float(max_tokens)), quantiles=quantiles)


class FixedLength:
    """Always predicts `tokens` (capped at max_tokens), with exponential quantiles; learns nothing."""

    def __init__(self, tokens: float) -> None:
        if not math.isfinite(tokens) or tokens < 0:
            raise ValueError(f"tokens must be finite and >= 0, got {tokens!r}")
        self.tokens = tokens

    def predict(
        self, *, prompt_text: str | None, prompt_tokens: int, slo_class: str, max_tokens: int
    ) -> LengthPrediction:
        return exponential_prediction(self.tokens, max_tokens)

    def observe(
        self,
        *,
        prompt_text: str | None,
        prompt_tokens: int,
        slo_class: str,
        max_tokens: int,
        output_tokens: int,
    ) -> None:
        return None


class ClassMeanLengths:
    """Per-class exponentially weighted mean of observed output lengths, `prior_tokens` until observed."""

    def __init__(self, prior_tokens: float = 200.0, weight: float = 0.05) -> None:
        if not math.isfinite(prior_tokens) or prior_tokens < 0 or not 0.0 < weight <= 1.0:
            raise ValueError("prior_tokens must be >= 0 and weight in (0, 1]")
        self.prior_tokens = prior_tokens
        self.weight = weight
        self._means: dict[str, float] = {}

    def predict(
        self, *, prompt_text: str | None, prompt_tokens: int, slo_class: str, max_tokens: int
    ) -> LengthPrediction:
        return exponential_prediction(self._means.get(slo_class, self.prior_tokens), max_tokens)

    def observe(
        self,
        *,
        prompt_text: str | None,
        prompt_tokens: int,
        slo_class: str,
        max_tokens: int,
        output_tokens: int,
    ) -> None:
        if output_tokens < 0:
            raise ValueError(f"output_tokens must be >= 0, got {output_tokens}")
        mean = self._means.get(slo_class, self.prior_tokens)
        self._means[slo_class] = mean + self.weight * (output_tokens - mean)
