"""The batch backlog's predicted tokens corrected by the predictor's observed bias (waiting_time.py).

The queue's tokens are the predictions made at enqueue time; `length_bias` scales them by the actual
over the predicted mean of the class's completed requests, clamped to the tuning's range. In-flight
work is zero here, so a backlog's `tokens_mean` is exactly the corrected queue.
"""

import dataclasses

import pytest
from sloguard_testing.autoscaling import BATCH, batch, context

from sloguard.api.inferencepool import PoolRole
from sloguard.operator.core.autoscaling import ClassSnapshot
from sloguard.operator.core.autoscaling.context import AutoscalerTuning
from sloguard.operator.core.autoscaling.waiting_time import batch_backlogs

QUEUED = 1000.0
PREDICTED_TOKENS = 289_000.0  # 289 predicted per queued request


def queued_batch(*, actual_mean: float | None, predicted_mean: float | None) -> ClassSnapshot:
    return dataclasses.replace(
        batch(QUEUED, tokens_mean=100.0),
        output_tokens_mean=actual_mean,
        predicted_tokens_mean=predicted_mean,
        queue_predicted_tokens=PREDICTED_TOKENS,
    )


@pytest.mark.parametrize(
    ("actual_mean", "predicted_mean", "tuning", "tokens"),
    [
        pytest.param(None, None, AutoscalerTuning(), PREDICTED_TOKENS, id="no calibration data: unchanged"),
        pytest.param(211.0, None, AutoscalerTuning(), PREDICTED_TOKENS, id="no predicted mean: unchanged"),
        pytest.param(None, 289.0, AutoscalerTuning(), PREDICTED_TOKENS, id="no actual mean: unchanged"),
        pytest.param(211.0, 0.0, AutoscalerTuning(), PREDICTED_TOKENS, id="zero predicted: unchanged"),
        pytest.param(211.0, 289.0, AutoscalerTuning(), 211_000.0, id="bias 0.73: scaled"),
        pytest.param(300.0, 150.0, AutoscalerTuning(), 578_000.0, id="under-prediction: scaled up"),
        pytest.param(10.0, 100.0, AutoscalerTuning(), 72_250.0, id="clamped at 0.25"),
        pytest.param(1000.0, 100.0, AutoscalerTuning(), 1_156_000.0, id="clamped at 4"),
        pytest.param(
            211.0, 289.0, AutoscalerTuning(length_bias_min=0.9), 260_100.0, id="tuned lower bound 0.9"
        ),
        pytest.param(
            300.0, 150.0, AutoscalerTuning(length_bias_max=1.5), 433_500.0, id="tuned upper bound 1.5"
        ),
    ],
)
def test_queued_tokens_are_scaled_by_the_observed_bias(
    actual_mean: float | None, predicted_mean: float | None, tuning: AutoscalerTuning, tokens: float
) -> None:
    ctx = context(PoolRole.BATCH, (BATCH,), tuning=tuning)
    snap = queued_batch(actual_mean=actual_mean, predicted_mean=predicted_mean)
    backlogs, notes = batch_backlogs(ctx, (BATCH,), (snap,))
    assert notes == []
    assert [b.name for b in backlogs] == ["batch"]
    assert backlogs[0].tokens_mean == pytest.approx(tokens)


def test_without_queue_predictions_the_measured_mean_is_used_uncorrected() -> None:
    # queue × actual mean is already in actual tokens: the bias must not be applied twice
    snap = dataclasses.replace(batch(QUEUED, tokens_mean=211.0), predicted_tokens_mean=289.0)
    backlogs, _ = batch_backlogs(context(PoolRole.BATCH, (BATCH,)), (BATCH,), (snap,))
    assert backlogs[0].tokens_mean == pytest.approx(211_000.0)


@pytest.mark.parametrize(("low", "high"), [(0.0, 4.0), (1.5, 4.0), (0.25, 0.9), (2.0, 1.0)])
def test_tuning_rejects_bounds_that_exclude_no_correction(low: float, high: float) -> None:
    with pytest.raises(ValueError, match="length_bias"):
        AutoscalerTuning(length_bias_min=low, length_bias_max=high)
