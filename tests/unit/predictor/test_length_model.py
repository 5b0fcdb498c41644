"""The shipped proxy predictor: valid, capped, deterministic answers; online correction; clear errors."""

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sloguard.predictor import model
from sloguard.predictor.model import ProxyLengthPredictor, load_default_predictor
from sloguard.predictor.prediction import LengthPrediction

WEIGHTS = load_default_predictor().weights
ESSAY = "Write a detailed essay about the history of the Roman empire, covering its rise and fall."


def fresh() -> ProxyLengthPredictor:
    return ProxyLengthPredictor(WEIGHTS)


def ask(
    p: ProxyLengthPredictor, text: str | None = ESSAY, *, cls: str = "sharegpt", max_tokens: int = 4096
) -> LengthPrediction:
    return p.predict(prompt_text=text, prompt_tokens=20, slo_class=cls, max_tokens=max_tokens)


@settings(max_examples=60, deadline=None)
@given(
    text=st.one_of(st.none(), st.text(max_size=3000)),
    prompt_tokens=st.integers(min_value=0, max_value=200_000),
    slo_class=st.sampled_from(["sharegpt", "alpaca_eval", "interactive", "", "batch"]),
    max_tokens=st.integers(min_value=1, max_value=100_000),
)
def test_quantiles_are_monotone_and_never_above_max_tokens(
    text: str | None, prompt_tokens: int, slo_class: str, max_tokens: int
) -> None:
    prediction = fresh().predict(
        prompt_text=text, prompt_tokens=prompt_tokens, slo_class=slo_class, max_tokens=max_tokens
    )
    levels = sorted(prediction.quantiles)
    assert {0.5, 0.9, 0.99} <= set(levels)
    values = [prediction.quantiles[q] for q in levels]
    assert values == sorted(values)
    assert all(0.0 <= v <= max_tokens for v in values)
    assert 0.0 <= prediction.mean_tokens <= max_tokens


def test_same_input_gives_the_same_answer_across_fresh_predictors() -> None:
    assert ask(fresh()) == ask(fresh()) == ask(load_default_predictor())


@pytest.mark.parametrize(
    ("short", "long"),
    [
        ("Answer yes or no: is Paris in France?", ESSAY),
        ("Translate 'good morning' to Spanish.", "Write a Python web scraper with error handling and tests."),
    ],
)
def test_task_cues_order_predictions(short: str, long: str) -> None:
    p = fresh()
    assert ask(p, short).mean_tokens < ask(p, long).mean_tokens


@pytest.mark.parametrize("true_tokens", [5, 2000])
def test_online_correction_moves_each_class_toward_its_observations(true_tokens: int) -> None:
    p = fresh()
    before = ask(p, cls="interactive").quantile(0.5)
    before_batch = ask(p, cls="batch").quantile(0.5)
    for _ in range(100):
        for cls, tokens in (("interactive", true_tokens), ("batch", 300)):
            p.observe(
                prompt_text=ESSAY, prompt_tokens=20, slo_class=cls, max_tokens=4096, output_tokens=tokens
            )
    after = ask(p, cls="interactive").quantile(0.5)
    assert abs(after - true_tokens) < abs(before - true_tokens)
    assert abs(math.log1p(after) - math.log1p(true_tokens)) < 0.5
    assert abs(ask(p, cls="batch").quantile(0.5) - 300) < abs(before_batch - 300)
    # A class with no observations of its own takes the bias learned over all classes.
    low, high = sorted((p.bias("interactive"), p.bias("batch")))
    assert low < p.bias("new") < high


def test_the_rank_key_is_the_offline_answer_while_the_mean_follows_the_online_correction() -> None:
    p = fresh()
    before = ask(p)
    assert before.rank_key == pytest.approx(before.mean_tokens)  # nothing learned yet
    for _ in range(50):
        p.observe(prompt_text=ESSAY, prompt_tokens=20, slo_class="sharegpt", max_tokens=4096, output_tokens=5)
    after = ask(p)
    assert after.mean_tokens < 0.5 * before.mean_tokens
    assert after.rank_key == before.rank_key  # predictions made before and after still rank alike


def test_outputs_cut_off_at_max_tokens_never_lower_the_prediction() -> None:
    p = fresh()
    before = ask(p).mean_tokens
    for _ in range(10):
        p.observe(prompt_text=ESSAY, prompt_tokens=20, slo_class="sharegpt", max_tokens=8, output_tokens=8)
    assert ask(p).mean_tokens == before


def test_unknown_class_and_missing_text_still_answer() -> None:
    p = fresh()
    assert ask(p, cls="never-seen").mean_tokens > 0
    assert ask(p, None, cls="never-seen").mean_tokens > 0


def test_max_tokens_caps_everything() -> None:
    prediction = ask(fresh(), max_tokens=3)
    assert prediction.mean_tokens <= 3
    assert prediction.quantile(0.99) <= 3


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prompt_tokens", -1, "prompt_tokens"),
        ("prompt_tokens", float("nan"), "prompt_tokens"),
        ("max_tokens", 0, "max_tokens"),
        ("max_tokens", float("inf"), "max_tokens"),
        ("max_tokens", 2.5, "max_tokens"),
    ],
)
def test_bad_requests_are_rejected_with_a_clear_error(field: str, value: float, message: str) -> None:
    kwargs: dict[str, Any] = {
        "prompt_text": ESSAY,
        "prompt_tokens": 20,
        "slo_class": "sharegpt",
        "max_tokens": 100,
    }
    kwargs[field] = value
    with pytest.raises(ValueError, match=message):
        fresh().predict(**kwargs)
    with pytest.raises(ValueError, match=message):
        fresh().observe(**kwargs, output_tokens=10)


@pytest.mark.parametrize("output_tokens", [-1, float("nan"), float("inf"), 1.5])
def test_bad_observations_are_rejected_and_change_nothing(output_tokens: float) -> None:
    p = fresh()
    before = ask(p)
    with pytest.raises(ValueError, match="output_tokens"):
        p.observe(
            prompt_text=ESSAY,
            prompt_tokens=20,
            slo_class="sharegpt",
            max_tokens=100,
            output_tokens=output_tokens,  # type: ignore[arg-type]
        )
    assert ask(p) == before


@settings(max_examples=40, deadline=None)
@given(
    keys=st.lists(
        st.tuples(
            st.one_of(st.none(), st.sampled_from(["hi", "write a long essay", "summarise this"])),
            st.integers(min_value=1, max_value=64),
            st.sampled_from(["interactive", "standard", "batch", "unknown"]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_the_offline_cache_answers_exactly_what_the_weights_answer(
    keys: list[tuple[str | None, int, str]],
) -> None:
    predictor = fresh()
    for text, tokens, slo_class in keys + keys:  # every key twice: the second time from the cache
        assert predictor.offline_log(text, tokens, slo_class) == WEIGHTS.predict_log(text, tokens, slo_class)


def test_the_offline_cache_is_bounded_and_forgets_the_oldest_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model, "OFFLINE_CACHE_SIZE", 3)
    predictor = fresh()
    for tokens in (1, 2, 3, 4):
        predictor.offline_log(None, tokens, "standard")
    assert [key[1] for key in predictor._offline] == [2, 3, 4]
