"""Accuracy figures for output-length predictions: MAE, Kendall's tau-b and SSJF's five-bucket accuracy.

Used by `sloguard predictor eval` and the predictor tests. Pure numpy. Buckets follow SSJF: cuts at 42, 141,
294 and 503 tokens, i.e. [0, 42), [42, 141), [141, 294), [294, 503), [503, inf).
"""

import numpy as np
import numpy.typing as npt

SSJF_BUCKET_CUTS = (42, 141, 294, 503)
FloatArray = npt.NDArray[np.float64]


def mean_absolute_error(true_tokens: FloatArray, predicted_tokens: FloatArray) -> float:
    return float(np.mean(np.abs(np.asarray(true_tokens) - np.asarray(predicted_tokens))))


def ssjf_bucket(tokens: FloatArray) -> npt.NDArray[np.int64]:
    """Bucket index 0..4 of each length."""
    return np.searchsorted(np.asarray(SSJF_BUCKET_CUTS, dtype=np.float64), tokens, side="right").astype(
        np.int64
    )


def bucket5_accuracy(true_tokens: FloatArray, predicted_tokens: FloatArray) -> float:
    return float(np.mean(ssjf_bucket(true_tokens) == ssjf_bucket(predicted_tokens)))


def kendall_tau_b(x: FloatArray, y: FloatArray) -> float:
    """Kendall's tau-b (ties handled); 0.0 when either side is constant (no ranking information).

    O(n^2) memory-light loop over rows, fine for the few thousand held-out rows it is used on.
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("kendall_tau_b needs two 1-d arrays of the same length")
    concordant_minus_discordant = 0.0
    ties_a = ties_b = pairs = 0.0
    for i in range(a.shape[0] - 1):
        da = np.sign(a[i + 1 :] - a[i])
        db = np.sign(b[i + 1 :] - b[i])
        concordant_minus_discordant += float(np.sum(da * db))
        ties_a += float(np.sum(da == 0))
        ties_b += float(np.sum(db == 0))
        pairs += da.shape[0]
    denominator = np.sqrt((pairs - ties_a) * (pairs - ties_b))
    return 0.0 if denominator == 0 else float(concordant_minus_discordant / denominator)
