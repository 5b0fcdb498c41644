"""Reference output-length predictors behind the same protocol: global mean, per-class mean, linear in
prompt length, and the oracle (true lengths, for benchmark bounds).

Used by `sloguard predictor eval` as baselines, and by policies and benchmarks that want a simple or an
ideal predictor. Pure: each is fitted from (prompt tokens, class, output tokens) triples handed to it, and
keeps learning from `observe` with exact running statistics (the means and the least-squares line are
refitted from running sums). Quantiles: the mean predictors give the empirical quantiles of the lengths
they were fitted on (fixed after fitting); the linear one gives none (its mean is the whole answer).
"""

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from sloguard.predictor.model import check_observation, check_request
from sloguard.predictor.prediction import LengthPrediction

BASELINE_QUANTILES = (0.5, 0.9, 0.99)


def _capped(mean: float, quantiles: dict[float, float], max_tokens: int) -> LengthPrediction:
    cap = float(max_tokens)
    return LengthPrediction(
        mean_tokens=min(max(mean, 0.0), cap),
        quantiles={q: min(max(v, 0.0), cap) for q, v in quantiles.items()},
    )


@dataclass
class _Mean:
    count: int = 0
    total: float = 0.0

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else 0.0


@dataclass
class GlobalMeanPredictor:
    """Always the mean output length seen so far."""

    _mean: _Mean = field(default_factory=_Mean)
    _quantiles: dict[float, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, output_tokens: Iterable[int]) -> "GlobalMeanPredictor":
        values = np.asarray(list(output_tokens), dtype=np.float64)
        if values.size == 0:
            raise ValueError("GlobalMeanPredictor.fit needs at least one length")
        quantiles = dict(
            zip(BASELINE_QUANTILES, np.quantile(values, BASELINE_QUANTILES).tolist(), strict=True)
        )
        return cls(_Mean(int(values.size), float(values.sum())), quantiles)

    def predict(
        self, *, prompt_text: str | None, prompt_tokens: int, slo_class: str, max_tokens: int
    ) -> LengthPrediction:
        check_request(prompt_tokens=prompt_tokens, max_tokens=max_tokens)
        return _capped(self._mean.value, self._quantiles, max_tokens)

    def observe(
        self,
        *,
        prompt_text: str | None,
        prompt_tokens: int,
        slo_class: str,
        max_tokens: int,
        output_tokens: int,
    ) -> None:
        check_observation(prompt_tokens=prompt_tokens, max_tokens=max_tokens, output_tokens=output_tokens)
        self._mean.count += 1
        self._mean.total += output_tokens


@dataclass
class ClassMeanPredictor:
    """The mean output length of the request's class; the global mean for a class never seen."""

    _overall: GlobalMeanPredictor
    _by_class: dict[str, GlobalMeanPredictor]

    @classmethod
    def fit(cls, rows: Iterable[tuple[str, int]]) -> "ClassMeanPredictor":
        """`rows`: (slo_class, output_tokens) pairs."""
        pairs = list(rows)
        by_class: dict[str, list[int]] = {}
        for slo_class, tokens in pairs:
            by_class.setdefault(slo_class, []).append(tokens)
        return cls(
            GlobalMeanPredictor.fit(t for _, t in pairs),
            {c: GlobalMeanPredictor.fit(v) for c, v in sorted(by_class.items())},
        )

    def predict(
        self, *, prompt_text: str | None, prompt_tokens: int, slo_class: str, max_tokens: int
    ) -> LengthPrediction:
        chosen = self._by_class.get(slo_class, self._overall)
        return chosen.predict(
            prompt_text=prompt_text, prompt_tokens=prompt_tokens, slo_class=slo_class, max_tokens=max_tokens
        )

    def observe(
        self,
        *,
        prompt_text: str | None,
        prompt_tokens: int,
        slo_class: str,
        max_tokens: int,
        output_tokens: int,
    ) -> None:
        check_observation(prompt_tokens=prompt_tokens, max_tokens=max_tokens, output_tokens=output_tokens)
        for target in (self._overall, self._by_class.setdefault(slo_class, GlobalMeanPredictor())):
            target.observe(
                prompt_text=prompt_text,
                prompt_tokens=prompt_tokens,
                slo_class=slo_class,
                max_tokens=max_tokens,
                output_tokens=output_tokens,
            )


@dataclass
class PromptLinearPredictor:
    """Ordinary least squares: output tokens = a + b * prompt tokens, from running sums."""

    _n: float = 0.0
    _sx: float = 0.0
    _sy: float = 0.0
    _sxx: float = 0.0
    _sxy: float = 0.0

    @classmethod
    def fit(cls, rows: Iterable[tuple[int, int]]) -> "PromptLinearPredictor":
        """`rows`: (prompt_tokens, output_tokens) pairs."""
        model = cls()
        for prompt_tokens, output_tokens in rows:
            model._add(float(prompt_tokens), float(output_tokens))
        if model._n == 0:
            raise ValueError("PromptLinearPredictor.fit needs at least one row")
        return model

    def _add(self, x: float, y: float) -> None:
        self._n += 1
        self._sx += x
        self._sy += y
        self._sxx += x * x
        self._sxy += x * y

    def coefficients(self) -> tuple[float, float]:
        """(intercept, slope); slope 0 while the prompt lengths seen have no spread."""
        if self._n == 0:
            return 0.0, 0.0
        spread = self._n * self._sxx - self._sx * self._sx
        slope = (
            (self._n * self._sxy - self._sx * self._sy) / spread if spread > 1e-9 * max(1.0, self._n) else 0.0
        )
        return (self._sy - slope * self._sx) / self._n, slope

    def predict(
        self, *, prompt_text: str | None, prompt_tokens: int, slo_class: str, max_tokens: int
    ) -> LengthPrediction:
        check_request(prompt_tokens=prompt_tokens, max_tokens=max_tokens)
        intercept, slope = self.coefficients()
        return _capped(intercept + slope * prompt_tokens, {}, max_tokens)

    def observe(
        self,
        *,
        prompt_text: str | None,
        prompt_tokens: int,
        slo_class: str,
        max_tokens: int,
        output_tokens: int,
    ) -> None:
        check_observation(prompt_tokens=prompt_tokens, max_tokens=max_tokens, output_tokens=output_tokens)
        self._add(float(prompt_tokens), float(output_tokens))


TrueLength = Callable[[str | None, int, str], int]


@dataclass
class OraclePredictor:
    """Knows each request's true output length; `true_length(prompt_text, prompt_tokens, slo_class)` says it.

    For benchmark upper bounds: a simulator that knows every request's length hands a lookup here (see
    `from_mapping` for the common case of a dict keyed by prompt text). The answer is exact, capped at
    `max_tokens`, with every quantile equal to it. `observe` learns nothing.
    """

    true_length: TrueLength

    @classmethod
    def from_mapping(cls, lengths_by_prompt: dict[str, int]) -> "OraclePredictor":
        def lookup(prompt_text: str | None, prompt_tokens: int, slo_class: str) -> int:
            if prompt_text is None or prompt_text not in lengths_by_prompt:
                raise KeyError(
                    f"the oracle does not know this prompt ({prompt_tokens} tokens, class {slo_class})"
                )
            return lengths_by_prompt[prompt_text]

        return cls(lookup)

    def predict(
        self, *, prompt_text: str | None, prompt_tokens: int, slo_class: str, max_tokens: int
    ) -> LengthPrediction:
        check_request(prompt_tokens=prompt_tokens, max_tokens=max_tokens)
        tokens = self.true_length(prompt_text, prompt_tokens, slo_class)
        if not math.isfinite(tokens) or tokens < 0:
            raise ValueError(f"the oracle's true length must be a non-negative number, got {tokens!r}")
        return _capped(float(tokens), dict.fromkeys(BASELINE_QUANTILES, float(tokens)), max_tokens)

    def observe(
        self,
        *,
        prompt_text: str | None,
        prompt_tokens: int,
        slo_class: str,
        max_tokens: int,
        output_tokens: int,
    ) -> None:
        check_observation(prompt_tokens=prompt_tokens, max_tokens=max_tokens, output_tokens=output_tokens)
