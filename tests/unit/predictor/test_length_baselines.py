"""Baseline and oracle predictors: exact running statistics, fallbacks, caps and clear errors."""

from typing import Any

import pytest

from sloguard.predictor.baselines import (
    ClassMeanPredictor,
    GlobalMeanPredictor,
    OraclePredictor,
    PromptLinearPredictor,
)
from sloguard.predictor.prediction import LengthPrediction, OutputLengthPredictor


def ask(
    p: OutputLengthPredictor, *, tokens: int = 10, cls: str = "a", text: str | None = "hi", cap: int = 10_000
) -> LengthPrediction:
    return p.predict(prompt_text=text, prompt_tokens=tokens, slo_class=cls, max_tokens=cap)


def test_global_mean_is_the_running_mean() -> None:
    p = GlobalMeanPredictor.fit([10, 20, 30])
    assert ask(p).mean_tokens == 20
    assert ask(p).quantiles[0.5] == 20
    p.observe(prompt_text=None, prompt_tokens=1, slo_class="z", max_tokens=100, output_tokens=60)
    assert ask(p).mean_tokens == 30
    assert ask(p, cap=25).mean_tokens == 25


def test_class_mean_falls_back_to_the_global_mean_for_an_unknown_class() -> None:
    p = ClassMeanPredictor.fit([("a", 10), ("a", 30), ("b", 100)])
    assert ask(p, cls="a").mean_tokens == 20
    assert ask(p, cls="b").mean_tokens == 100
    assert ask(p, cls="new").mean_tokens == pytest.approx(140 / 3)
    p.observe(prompt_text=None, prompt_tokens=1, slo_class="new", max_tokens=500, output_tokens=7)
    assert ask(p, cls="new").mean_tokens == 7


def test_prompt_linear_recovers_a_line_and_updates_online() -> None:
    p = PromptLinearPredictor.fit([(0, 5), (10, 25), (20, 45)])
    assert p.coefficients() == pytest.approx((5.0, 2.0))
    assert ask(p, tokens=100).mean_tokens == pytest.approx(205)
    p.observe(prompt_text=None, prompt_tokens=30, slo_class="a", max_tokens=1000, output_tokens=65)
    assert p.coefficients() == pytest.approx((5.0, 2.0))
    assert ask(PromptLinearPredictor.fit([(3, 9), (3, 11)]), tokens=50).mean_tokens == 10


def test_oracle_returns_the_true_length_capped() -> None:
    p = OraclePredictor.from_mapping({"hi": 77})
    assert ask(p).mean_tokens == 77
    assert ask(p).quantile(0.99) == 77
    assert ask(p, cap=50).mean_tokens == 50
    with pytest.raises(KeyError, match="oracle"):
        ask(p, text="unknown")
    assert ask(OraclePredictor(lambda text, tokens, cls: 3 * tokens), tokens=4).mean_tokens == 12


@pytest.mark.parametrize(
    "predictor",
    [
        GlobalMeanPredictor.fit([1]),
        ClassMeanPredictor.fit([("a", 1)]),
        PromptLinearPredictor.fit([(1, 1)]),
        OraclePredictor.from_mapping({"hi": 1}),
    ],
    ids=lambda p: type(p).__name__,
)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"prompt_tokens": -3},
        {"prompt_tokens": float("nan")},
        {"max_tokens": -1},
        {"output_tokens": -2},
        {"output_tokens": float("nan")},
    ],
)
def test_bad_input_is_rejected(predictor: OutputLengthPredictor, kwargs: dict[str, float]) -> None:
    call: dict[str, Any] = {
        "prompt_text": "hi",
        "prompt_tokens": 1,
        "slo_class": "a",
        "max_tokens": 10,
        "output_tokens": 1,
    }
    call.update(kwargs)
    with pytest.raises(ValueError, match="must be"):
        predictor.observe(**call)
    if "output_tokens" not in kwargs:
        del call["output_tokens"]
        with pytest.raises(ValueError, match="must be"):
            predictor.predict(**call)


def test_fitting_on_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        GlobalMeanPredictor.fit([])
    with pytest.raises(ValueError, match="at least one"):
        PromptLinearPredictor.fit([])
