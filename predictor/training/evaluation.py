"""Held-out evaluation of output-length predictors: accuracy and per-prediction latency.

Called by `sloguard predictor eval` and the shipped-artifact test. The model and three baselines are scored
on the same test rows (`training.dataset`'s deterministic 20 % split), and `ceiling` reports the
same-prompt bound (other sampled answers to the same prompt as the prediction) on the test rows that have
such answers, next to the model on those rows. Baselines are fitted on the training
and validation rows. Every predictor's point estimate is its `mean_tokens` (the field policies read), used
for MAE, Kendall's tau-b against the true lengths, and SSJF's five-bucket accuracy; MAE and bucket
accuracy are also reported for the predicted median (`quantile(0.5)`), the point a bucket classifier would
pick (the mean of a right-skewed length lies above it). Latency is the wall time
of one `predict()` call, from the Python call to the returned `LengthPrediction`, per test row after a short
warm-up, on whatever machine runs the command. Each row is timed in `TIMING_PASSES` passes and its least time
is kept (as `timeit` advises): on a shared machine a pass is sometimes preempted by other processes, which
says nothing about the predictor, while a row that is slow by itself (a long prompt) is slow in every pass.
Before timing, the objects alive (the loaded data set and the tokenizer's vocabulary, hundreds of thousands
of them) are moved out of the garbage collector's generations with `gc.freeze()`, as a long-running server
does after start-up; otherwise a full collection of this evaluation's own heap would land inside some
predict() calls and be counted as prediction time.
"""

import gc
import time
from collections.abc import Sequence
from typing import TypedDict

import numpy as np

from sloguard.predictor.baselines import (
    ClassMeanPredictor,
    GlobalMeanPredictor,
    PromptLinearPredictor,
)
from sloguard.predictor.metrics import bucket5_accuracy, kendall_tau_b, mean_absolute_error
from sloguard.predictor.prediction import OutputLengthPredictor
from sloguard.predictor.training.dataset import LengthRow

EVAL_MAX_TOKENS = 1 << 20  # no cap during evaluation: the data's lengths are uncapped
WARMUP_CALLS = 50
TIMING_PASSES = 3


class Scores(TypedDict):
    mae: float
    kendall_tau: float
    bucket5_accuracy: float
    median_mae: float  # the same two figures from the predicted median (quantile 0.5) instead of the mean
    median_bucket5_accuracy: float
    p50_ms: float
    p99_ms: float


class Ceiling(TypedDict):
    """How well the other answers to the same prompt predict an answer, against the model on those rows."""

    rows: int
    mae: float
    kendall_tau: float
    bucket5_accuracy: float
    model_mae: float
    model_kendall_tau: float
    model_bucket5_accuracy: float


class Report(TypedDict):
    model: Scores
    baselines: dict[str, Scores]
    ceiling: Ceiling
    test_rows: int


def score(predictor: OutputLengthPredictor, rows: Sequence[LengthRow]) -> Scores:
    if not rows:
        raise ValueError("no test rows to score")
    for row in rows[:WARMUP_CALLS]:
        predictor.predict(
            prompt_text=row.prompt_text,
            prompt_tokens=row.prompt_tokens,
            slo_class=row.slo_class,
            max_tokens=EVAL_MAX_TOKENS,
        )
    predicted = np.empty(len(rows))
    median = np.empty(len(rows))
    latency_s = np.full(len(rows), np.inf)
    gc.collect()
    gc.freeze()
    try:
        for _ in range(TIMING_PASSES):
            for i, row in enumerate(rows):
                start = time.perf_counter()
                prediction = predictor.predict(
                    prompt_text=row.prompt_text,
                    prompt_tokens=row.prompt_tokens,
                    slo_class=row.slo_class,
                    max_tokens=EVAL_MAX_TOKENS,
                )
                latency_s[i] = min(latency_s[i], time.perf_counter() - start)
                predicted[i] = prediction.mean_tokens
                median[i] = prediction.quantile(0.5)
    finally:
        gc.unfreeze()
    true = np.array([row.output_tokens for row in rows], dtype=np.float64)
    return Scores(
        mae=round(mean_absolute_error(true, predicted), 3),
        kendall_tau=round(kendall_tau_b(true, predicted), 4),
        bucket5_accuracy=round(bucket5_accuracy(true, predicted), 4),
        median_mae=round(mean_absolute_error(true, median), 3),
        median_bucket5_accuracy=round(bucket5_accuracy(true, median), 4),
        p50_ms=round(float(np.percentile(latency_s, 50)) * 1e3, 4),
        p99_ms=round(float(np.percentile(latency_s, 99)) * 1e3, 4),
    )


def baselines(fit_rows: Sequence[LengthRow]) -> dict[str, OutputLengthPredictor]:
    return {
        "global_mean": GlobalMeanPredictor.fit(r.output_tokens for r in fit_rows),
        "class_mean": ClassMeanPredictor.fit((r.slo_class, r.output_tokens) for r in fit_rows),
        "prompt_linear": PromptLinearPredictor.fit((r.prompt_tokens, r.output_tokens) for r in fit_rows),
    }


def evaluate_by_class(
    model: OutputLengthPredictor, fit_rows: Sequence[LengthRow], test_rows: Sequence[LengthRow]
) -> dict[str, Report]:
    """The same report on each SLO class's (data set's) test rows alone, baselines fitted on all fit rows."""
    classes = sorted({row.slo_class for row in test_rows})
    return {c: evaluate(model, fit_rows, [r for r in test_rows if r.slo_class == c]) for c in classes}


def ceiling(model: OutputLengthPredictor, test_rows: Sequence[LengthRow]) -> Ceiling:
    """The same-prompt bound: rows whose group holds several answers to one prompt (AlpacaEval's four
    models) are predicted by the geometric mean of the other answers' lengths, log1p-averaged. No predictor
    that reads only the prompt can know more about one sampled answer than the other samples do, up to
    their own sampling noise, so this estimates how far the labels' noise lets any such predictor go."""
    groups: dict[str, list[LengthRow]] = {}
    for row in test_rows:
        groups.setdefault(row.group, []).append(row)
    shared = [rows for rows in groups.values() if len(rows) > 1]
    if not shared:
        return Ceiling(
            rows=0,
            mae=0.0,
            kendall_tau=0.0,
            bucket5_accuracy=0.0,
            model_mae=0.0,
            model_kendall_tau=0.0,
            model_bucket5_accuracy=0.0,
        )
    true: list[float] = []
    others: list[float] = []
    for rows in shared:
        logs = np.log1p(np.array([r.output_tokens for r in rows], dtype=np.float64))
        for i, row in enumerate(rows):
            true.append(float(row.output_tokens))
            others.append(float(np.expm1((logs.sum() - logs[i]) / (len(rows) - 1))))
    flat = [row for rows in shared for row in rows]
    model_predicted = np.array(
        [
            model.predict(
                prompt_text=r.prompt_text,
                prompt_tokens=r.prompt_tokens,
                slo_class=r.slo_class,
                max_tokens=EVAL_MAX_TOKENS,
            ).mean_tokens
            for r in flat
        ]
    )
    t, o = np.array(true), np.array(others)
    return Ceiling(
        rows=len(flat),
        mae=round(mean_absolute_error(t, o), 3),
        kendall_tau=round(kendall_tau_b(t, o), 4),
        bucket5_accuracy=round(bucket5_accuracy(t, o), 4),
        model_mae=round(mean_absolute_error(t, model_predicted), 3),
        model_kendall_tau=round(kendall_tau_b(t, model_predicted), 4),
        model_bucket5_accuracy=round(bucket5_accuracy(t, model_predicted), 4),
    )


def evaluate(
    model: OutputLengthPredictor, fit_rows: Sequence[LengthRow], test_rows: Sequence[LengthRow]
) -> Report:
    return Report(
        model=score(model, test_rows),
        baselines={name: score(p, test_rows) for name, p in baselines(fit_rows).items()},
        ceiling=ceiling(model, test_rows),
        test_rows=len(test_rows),
    )
