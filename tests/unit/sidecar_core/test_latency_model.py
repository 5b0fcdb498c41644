"""The latency model: least-squares fits recover known coefficients, and online calibration follows."""

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sloguard.sidecar.core.latency import (
    BatchLoad,
    DecodeModel,
    LatencyModel,
    PrefillModel,
    _OnlineLeastSquares,
)


def test_decode_fit_recovers_the_four_coefficients() -> None:
    truth = DecodeModel(a=3e-8, b=0.0007, c=4e-7, d=0.011)
    rng = np.random.default_rng(0)
    batches = rng.integers(1, 64, 200).astype(float)
    lengths = rng.integers(100, 4000, 200).astype(float)
    itls = [truth.itl_s(b, ln) for b, ln in zip(batches, lengths, strict=True)]
    fitted = DecodeModel.fit(list(batches), list(lengths), itls)
    for got, want in zip(
        (fitted.a, fitted.b, fitted.c, fitted.d), (truth.a, truth.b, truth.c, truth.d), strict=True
    ):
        assert got == pytest.approx(want, rel=1e-6, abs=1e-12)


def test_prefill_fit_finds_the_breakpoint_and_the_slope() -> None:
    truth = PrefillModel(n0_tokens=512, flat_s=0.03, per_token_s=0.0001, intercept_s=-0.02)
    tokens = [64, 128, 256, 512, 1024, 2048, 4096, 8192]
    fitted = PrefillModel.fit(tokens, [truth.time_s(t) for t in tokens])
    assert fitted.n0_tokens == 512
    assert fitted.flat_s == pytest.approx(0.03)
    assert fitted.per_token_s == pytest.approx(0.0001)
    for t in (100, 700, 3000, 10000):
        assert fitted.time_s(t) == pytest.approx(truth.time_s(t))


@pytest.mark.parametrize(
    ("tokens", "seconds"),
    [([1.0], [1.0]), ([1.0, 2.0], [1.0]), ([1.0, math.nan], [1.0, 2.0]), ([-1.0, 2.0], [1.0, 2.0])],
)
def test_bad_prefill_samples_are_refused(tokens: list[float], seconds: list[float]) -> None:
    with pytest.raises(ValueError):
        PrefillModel.fit(tokens, seconds)


def test_bad_decode_samples_are_refused() -> None:
    with pytest.raises(ValueError):
        DecodeModel.fit([1, 2], [1, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        DecodeModel(a=math.nan, b=0, c=0, d=0)


def test_online_calibration_moves_the_decode_model_toward_what_it_observes() -> None:
    truth = DecodeModel(a=6e-8, b=0.0015, c=1e-6, d=0.02)  # a slower engine than the default
    model = LatencyModel(refit_every=16, ridge=0.01)
    rng = np.random.default_rng(1)
    probe = (24.0, 1500.0)
    before = abs(model.itl_s(*probe) - truth.itl_s(*probe))
    for _ in range(2000):
        b, ln = float(rng.integers(1, 48)), float(rng.integers(100, 3000))
        model.observe_step(b, ln, truth.itl_s(b, ln))
    after = abs(model.itl_s(*probe) - truth.itl_s(*probe))
    assert after < 0.1 * before
    assert model.version > 0


def test_decode_calibration_weighs_each_read_by_the_tokens_it_brought() -> None:
    """A stream read in bursts: eight tokens at 3 ms in one read, then one token after a 12 ms prefill
    stall, over and over. Per token that is (8 * 3 + 12) / 9 = 4 ms, which is what TPOT measures; counted
    one per read, the fit would sit at the mean of the two reads, 7.5 ms. The calibration follows the
    per-token time, and a model fed the same time one token per read agrees with it."""
    bursty = LatencyModel(refit_every=8, ridge=0.01)
    steady = LatencyModel(refit_every=8, ridge=0.01)
    for _ in range(400):
        bursty.observe_step(24.0, 800.0, 0.003, tokens=8)
        bursty.observe_step(24.0, 800.0, 0.012, tokens=1)
        for _ in range(9):
            steady.observe_step(24.0, 800.0, 0.004)
    assert bursty.itl_s(24.0, 800.0) == pytest.approx(0.004, rel=0.05)
    assert steady.itl_s(24.0, 800.0) == pytest.approx(0.004, rel=0.05)
    fitted_s = bursty.itl_s(24.0, 800.0)
    for _ in range(100):  # reads that brought no token are not observations
        bursty.observe_step(24.0, 800.0, 1.0, tokens=0)
    assert bursty.itl_s(24.0, 800.0) == fitted_s


def test_online_calibration_scales_prefill_toward_observed_first_tokens() -> None:
    """Every first token twice the prior's prefill, queue depths in a fixed random order (the two
    corrections are fitted jointly, so a sweep that ends on long queues would leave the flat part with only
    low-share observations at the end): both corrections and every prediction come near 2x."""
    model = LatencyModel(refit_every=8)
    depths = list(range(100, 4000, 50))
    random.Random(0).shuffle(depths)
    for tokens in depths:
        model.observe_prefill(tokens, 2.0 * model.prefill.time_s(tokens))
    assert model.prefill_scale == pytest.approx(2.0, rel=0.15)
    assert model.per_token_scale == pytest.approx(2.0, rel=0.15)
    for tokens in (100, 1000, 3000):
        assert model.prefill_s(tokens) == pytest.approx(2.0 * model.prefill.time_s(tokens), rel=0.15)
    frozen = LatencyModel(online=False)
    frozen.observe_prefill(1000, 10.0)
    frozen.observe_step(4, 100, 1.0)
    assert frozen.version == 0 and frozen.prefill_scale == 1.0


def test_tpot_if_joins_evaluates_the_fit_at_the_mean_length_over_the_generation() -> None:
    model = LatencyModel(decode=DecodeModel(a=1e-6, b=1e-3, c=1e-5, d=0.01))
    load = BatchLoad(batch_size=3, total_len_tokens=3000)
    got = model.tpot_if_joins_s(load, candidate_prompt_tokens=1000, candidate_output_tokens=200)
    mean_len = (3000 + 1000) / 4 + 100
    assert got == pytest.approx(model.itl_s(4, mean_len))
    assert model.ttft_at_position_s(5000) == pytest.approx(model.prefill.time_s(5000))


_observation = st.tuples(
    st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3),
    st.floats(-10.0, 10.0),
    st.integers(1, 12),
)


@settings(max_examples=60, deadline=None)
@given(
    observations=st.lists(_observation, max_size=3 * _OnlineLeastSquares.FOLD_AT),
    forgetting=st.floats(0.9, 1.0),
    read_every=st.integers(1, 80),
)
def test_buffered_normal_equations_equal_adding_one_at_a_time(
    observations: list[tuple[list[float], float, int]], forgetting: float, read_every: int
) -> None:
    """However the observations are buffered and whenever a fit reads them, the normal equations are the
    ones that folding each observation in at once (forget, then add it `weight` times) gives."""
    ls = _OnlineLeastSquares(3, forgetting)
    xtx, xty = np.zeros((3, 3)), np.zeros(3)
    for i, (x, y, weight) in enumerate(observations):
        ls.add(x, y, weight=weight)
        v = np.asarray(x)
        xtx = xtx * forgetting**weight + weight * np.outer(v, v)
        xty = xty * forgetting**weight + weight * v * y
        if i % read_every == 0:
            np.testing.assert_allclose(ls.xtx, xtx, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(ls.xtx, xtx, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(ls.xty, xty, rtol=1e-9, atol=1e-6)
    assert ls.count == len(observations)
